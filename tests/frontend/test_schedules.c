/* SPDX-License-Identifier: MIT */
/* Recurring schedules on the frontend, against a real redis-server: every invalid field is a
 * 400 naming it (the schedule's own and its event's, validated as a publish's event), an
 * unknown topic is 404, PUT/GET/list/DELETE round trip with the stored envelope and the
 * registry version, the count bound, and a schema-bound topic's event converted once. */
#include "fe_fixture.h"

#include "msm/base64.h"
#include "msm/envelope.h"
#include "msm/schedule.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOPIC "sched-t"

static void put_schedule(resp_t *r, const char *name, const char *body)
{
    char path[512];
    snprintf(path, sizeof(path), "/v1/schedules/%s", name);
    http(r, "PUT", path, body);
}

static long long version(void)
{
    return cmd_int("GET %s:{registry}:version", F.ns);
}

static void test_invalid(void)
{
    put_topic(TOPIC, NULL);
    static const struct {
        const char *body;
        int status;
        const char *field;
    } cases[] = {
        {"{\"every_ms\":1000,\"event\":{\"data\":1}}", 400, "topic"},
        {"{\"topic\":\"no/such\",\"every_ms\":1000,\"event\":{\"data\":1}}", 400, "topic"},
        {"{\"topic\":\"" TOPIC "\",\"event\":{\"data\":1}}", 400, "cron"},
        {"{\"topic\":\"" TOPIC
         "\",\"cron\":\"* * * * *\",\"every_ms\":1000,\"event\":{\"data\":1}}",
         400, "every_ms"},
        {"{\"topic\":\"" TOPIC "\",\"every_ms\":999,\"event\":{\"data\":1}}", 400, "every_ms"},
        {"{\"topic\":\"" TOPIC "\",\"every_ms\":-5,\"event\":{\"data\":1}}", 400, "every_ms"},
        {"{\"topic\":\"" TOPIC "\",\"cron\":\"*/0 * * * *\",\"event\":{\"data\":1}}", 400, "cron"},
        {"{\"topic\":\"" TOPIC "\",\"cron\":\"0 0 * * * 2027\",\"event\":{\"data\":1}}", 400,
         "cron"},
        {"{\"topic\":\"" TOPIC "\",\"cron\":\"0 0 31 2 *\",\"event\":{\"data\":1}}", 400, "cron"},
        {"{\"topic\":\"" TOPIC "\",\"every_ms\":1000,\"timezone\":\"Europe/Berlin\","
         "\"event\":{\"data\":1}}",
         400, "timezone"},
        {"{\"topic\":\"" TOPIC
         "\",\"every_ms\":1000,\"catch_up\":\"first\",\"event\":{\"data\":1}}",
         400, "catch_up"},
        {"{\"topic\":\"" TOPIC "\",\"every_ms\":1000}", 400, "event"},
        {"{\"topic\":\"" TOPIC "\",\"every_ms\":1000,\"event\":\"x\"}", 400, "event"},
        {"{\"topic\":\"" TOPIC "\",\"every_ms\":1000,\"event\":{}}", 400, "event.data"},
        {"{\"topic\":\"" TOPIC
         "\",\"every_ms\":1000,\"event\":{\"data\":1,\"data_base64\":\"AA==\"}}",
         400, "event.data_base64"},
        {"{\"topic\":\"" TOPIC "\",\"every_ms\":1000,\"event\":{\"data_base64\":\"!!\"}}", 400,
         "event.data_base64"},
        {"{\"topic\":\"" TOPIC "\",\"every_ms\":1000,\"event\":{\"data\":1,\"priority\":10}}", 400,
         "event.priority"},
        {"{\"topic\":\"" TOPIC "\",\"every_ms\":1000,\"event\":{\"data\":1,\"key\":\"a\\u0001\"}}",
         400, "event.key"},
        {"{\"topic\":\"" TOPIC "\",\"every_ms\":1000,\"event\":{\"data\":1,\"content_type\":"
         "\"text/plain\"}}",
         400, "event.content_type"},
        {"{\"topic\":\"" TOPIC "\",\"every_ms\":1000,\"event\":{\"data\":1,\"color\":\"red\"}}",
         400, "event.color"},
        {"{\"topic\":\"" TOPIC "\",\"every_ms\":1000,\"event\":{\"data\":1,\"delay_ms\":5}}", 400,
         "event.delay_ms"},
        {"{\"topic\":\"" TOPIC "\",\"every_ms\":1000,\"event\":{\"data\":1,\"deliver_at\":"
         "\"2030-01-01T00:00:00Z\"}}",
         400, "event.deliver_at"},
        {"{\"topic\":\"" TOPIC "\",\"every_ms\":1000,\"event\":{\"data\":1,\"deadline\":"
         "\"2030-01-01T00:00:00Z\"}}",
         400, "event.deadline"},
        {"{\"topic\":\"" TOPIC "\",\"every_ms\":1000,\"event\":{\"data\":1,\"idempotency_key\":"
         "\"k\"}}",
         400, "event.idempotency_key"},
        {"{\"topic\":\"" TOPIC
         "\",\"every_ms\":1000,\"event\":{\"data\":1,\"traceparent\":\"" TRACEPARENT "\"}}",
         400, "event.traceparent"},
        {"{\"topic\":\"" TOPIC "\",\"every_ms\":1000,\"event\":{\"data\":1,\"attributes\":"
         "{\"msm-schedule\":\"x\"}}}",
         400, "event.attributes.msm-schedule"},
        {"{\"topic\":\"" TOPIC "\",\"every_ms\":1000,\"event\":{\"data\":1,\"attributes\":"
         "{\"msm-due-time\":\"x\"}}}",
         400, "event.attributes.msm-due-time"},
        {"{\"topic\":\"" TOPIC "\",\"every_ms\":1000,\"event\":{\"data\":1,\"attributes\":"
         "{\"a b\":\"x\"}}}",
         400, "event.attributes[\"a b\"]"},
        {"{\"topic\":\"" TOPIC "\",\"every_ms\":1000,\"event\":{\"data\":1},\"envelope\":\"AA==\"}",
         400, "envelope"},
        {"{\"topic\":\"" TOPIC "\",\"every_ms\":1000,\"event\":{\"data\":1},\"start_at\":1}", 400,
         "start_at"},
        {"{\"topic\":\"" TOPIC "\",\"every_ms\":1000,\"event\":{\"data\":1},\"name\":\"other\"}",
         400, "name"},
        {"{\"topic\":", 400, "$"},
        {"[]", 400, "$"},
    };
    long long v0 = version();
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        resp_t r;
        put_schedule(&r, "s1", cases[i].body);
        if (r.status != cases[i].status || !has_detail(&r, cases[i].field))
            fprintf(stderr, "\n  %s: %d %s (want %d at %s)", cases[i].body, r.status, r.body,
                    cases[i].status, cases[i].field);
        CU_ASSERT_EQUAL(r.status, cases[i].status);
        CU_ASSERT_STRING_EQUAL(err_code(&r), "INVALID_ARGUMENT");
        CU_ASSERT_TRUE(has_detail(&r, cases[i].field));
        resp_clear(&r);
    }
    /* Several problems: each named. */
    resp_t r;
    put_schedule(&r, "s1",
                 "{\"topic\":\"" TOPIC "\",\"every_ms\":5,\"timezone\":\"PST\",\"event\":{"
                 "\"delay_ms\":1}}");
    CU_ASSERT_EQUAL(r.status, 400);
    CU_ASSERT_TRUE(has_detail(&r, "every_ms") && has_detail(&r, "timezone") &&
                   has_detail(&r, "event.delay_ms") && has_detail(&r, "event.data"));
    resp_clear(&r);
    /* A bad name is a 400 on PUT, a 404 on GET and DELETE. */
    put_schedule(&r, "bad!name",
                 "{\"topic\":\"" TOPIC "\",\"every_ms\":1000,\"event\":{\"data\":1}}");
    CU_ASSERT_EQUAL(r.status, 400);
    CU_ASSERT_TRUE(has_detail(&r, "name"));
    resp_clear(&r);
    http(&r, "GET", "/v1/schedules/bad!name", NULL);
    CU_ASSERT_EQUAL(r.status, 404);
    resp_clear(&r);
    /* Too large: 413 naming the payload (a schedule's event is at most 8 KiB)... */
    size_t big = 9 * 1024;
    char *body = malloc(big + 200);
    int n =
        snprintf(body, 200, "{\"topic\":\"" TOPIC "\",\"every_ms\":1000,\"event\":{\"data\":\"");
    memset(body + n, 'x', big);
    strcpy(body + n + big, "\"}}");
    put_schedule(&r, "s1", body);
    CU_ASSERT_EQUAL(r.status, 413);
    CU_ASSERT_STRING_EQUAL(err_code(&r), "PAYLOAD_TOO_LARGE");
    CU_ASSERT_TRUE(has_detail(&r, "event.data"));
    resp_clear(&r);
    free(body);
    /* ...and the whole schedule at most 32 KiB stored (40 attributes of 1000 bytes). */
    json_t *attrs = json_object();
    char value[1001];
    memset(value, 'v', 1000);
    value[1000] = '\0';
    for (int i = 0; i < 40; i++) {
        char an[16];
        snprintf(an, sizeof(an), "a%d", i);
        json_object_set_new(attrs, an, json_string(value));
    }
    json_t *sb = json_pack("{s:s,s:i,s:{s:i,s:o}}", "topic", TOPIC, "every_ms", 1000, "event",
                           "data", 1, "attributes", attrs);
    char *text = json_dumps(sb, JSON_COMPACT);
    put_schedule(&r, "s1", text);
    CU_ASSERT_EQUAL(r.status, 413);
    CU_ASSERT_STRING_EQUAL(err_code(&r), "PAYLOAD_TOO_LARGE");
    CU_ASSERT_TRUE(has_detail(&r, "event"));
    resp_clear(&r);
    free(text);
    json_decref(sb);
    /* Nothing was stored. */
    CU_ASSERT_EQUAL(version(), v0);
    CU_ASSERT_EQUAL(cmd_int("HLEN %s:{registry}:schedules", F.ns), 0);
}

static void test_unknown_topic(void)
{
    resp_t r;
    put_schedule(&r, "s2", "{\"topic\":\"nope\",\"every_ms\":1000,\"event\":{\"data\":1}}");
    CU_ASSERT_EQUAL(r.status, 404);
    CU_ASSERT_STRING_EQUAL(err_code(&r), "NOT_FOUND");
    CU_ASSERT_TRUE(has_detail(&r, "topic"));
    resp_clear(&r);
    /* Invalid and on an unknown topic: the 400 first, as for subscriptions. */
    put_schedule(&r, "s2", "{\"topic\":\"nope\",\"every_ms\":1,\"event\":{\"data\":1}}");
    CU_ASSERT_EQUAL(r.status, 400);
    resp_clear(&r);
    http(&r, "GET", "/v1/schedules/s2", NULL);
    CU_ASSERT_EQUAL(r.status, 404);
    resp_clear(&r);
}

/* The packed envelope stored under @p name, unpacked. */
static Msm__V1__Event *stored_envelope(const char *name)
{
    redisReply *rep = cmd("HGET %s:{registry}:schedules %s", F.ns, name);
    CU_ASSERT_EQUAL_FATAL(rep->type, REDIS_REPLY_STRING);
    json_t *j = json_loads(rep->str, 0, NULL);
    freeReplyObject(rep);
    const char *b64 = jstr(j, "envelope");
    CU_ASSERT_PTR_NOT_NULL_FATAL(b64);
    uint8_t buf[4096];
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(msm_base64_decode(b64, strlen(b64), buf, &len), MSM_OK);
    json_decref(j);
    return msm_event_unpack(buf, len);
}

static void test_round_trip(void)
{
    long long v0 = version();
    resp_t r;
    put_schedule(&r, "every-second",
                 "{\"topic\":\"" TOPIC "\",\"every_ms\":1000,\"catch_up\":\"all\",\"event\":{"
                 "\"data\":{\"n\":1},\"key\":\"k\",\"ordering_key\":\"ok\",\"priority\":7,"
                 "\"attributes\":{\"kind\":\"tick\"}}}");
    CU_ASSERT_EQUAL_FATAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(jstr(r.json, "name"), "every-second");
    CU_ASSERT_STRING_EQUAL(jstr(r.json, "topic"), TOPIC);
    CU_ASSERT_EQUAL(jint(r.json, "every_ms"), 1000);
    CU_ASSERT_TRUE(json_is_null(json_object_get(r.json, "cron")));
    CU_ASSERT_STRING_EQUAL(jstr(r.json, "timezone"), "UTC");
    CU_ASSERT_STRING_EQUAL(jstr(r.json, "catch_up"), "all");
    CU_ASSERT_EQUAL(jint(json_object_get(json_object_get(r.json, "event"), "data"), "n"), 1);
    CU_ASSERT_PTR_NULL(json_object_get(r.json, "envelope"));
    json_int_t created = jint(r.json, "created_ms"), updated = jint(r.json, "updated_ms");
    CU_ASSERT(created > 0 && updated == created);
    json_t *first = json_incref(r.json);
    resp_clear(&r);
    CU_ASSERT_EQUAL(version(), v0 + 1); /* daemons see it within a registry poll */

    /* What the scheduler publishes at every tick, from the stored envelope. */
    Msm__V1__Event *ev = stored_envelope("every-second");
    CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
    CU_ASSERT_STRING_EQUAL(ev->topic, TOPIC);
    CU_ASSERT_STRING_EQUAL(ev->key, "k");
    CU_ASSERT_STRING_EQUAL(ev->ordering_key, "ok");
    CU_ASSERT_EQUAL(ev->priority, 7);
    CU_ASSERT_STRING_EQUAL(ev->content_type, "application/json");
    CU_ASSERT_EQUAL(ev->payload.len, strlen("{\"n\":1}"));
    CU_ASSERT_EQUAL(memcmp(ev->payload.data, "{\"n\":1}", ev->payload.len), 0);
    CU_ASSERT_STRING_EQUAL(msm_event_attr(ev, "kind"), "tick");
    CU_ASSERT_STRING_EQUAL(ev->id, "");
    CU_ASSERT_EQUAL(ev->deliver_at_ms, 0);
    msm_event_free(ev);

    /* GET shows what PUT answered; the list has it, sorted by name. */
    http(&r, "GET", "/v1/schedules/every-second", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_TRUE(json_equal(r.json, first));
    resp_clear(&r);
    put_schedule(&r, "a-cron",
                 "{\"topic\":\"" TOPIC "\",\"cron\":\"*/5 * * * MON-FRI\",\"timezone\":null,"
                 "\"event\":{\"data_base64\":\"AAEC\",\"content_type\":\"application/x-raw\"}}");
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(jstr(r.json, "cron"), "*/5 * * * MON-FRI");
    CU_ASSERT_TRUE(json_is_null(json_object_get(r.json, "every_ms")));
    CU_ASSERT_STRING_EQUAL(jstr(r.json, "catch_up"), "last");
    resp_clear(&r);
    ev = stored_envelope("a-cron");
    CU_ASSERT_EQUAL(ev->payload.len, 3);
    CU_ASSERT_STRING_EQUAL(ev->content_type, "application/x-raw");
    msm_event_free(ev);
    http(&r, "GET", "/v1/schedules", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    json_t *list = json_object_get(r.json, "schedules");
    CU_ASSERT_EQUAL_FATAL(json_array_size(list), 2);
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(list, 0), "name"), "a-cron");
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(list, 1), "name"), "every-second");
    CU_ASSERT_PTR_NULL(json_object_get(json_array_get(list, 0), "envelope"));
    resp_clear(&r);

    /* A PUT of an existing schedule keeps created_ms and moves updated_ms; the answer of a
     * GET may be PUT back as it is. */
    msm_test_spin(F.loop, 5);
    char *again = json_dumps(first, JSON_COMPACT);
    put_schedule(&r, "every-second", again);
    free(again);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(jint(r.json, "created_ms"), created);
    CU_ASSERT(jint(r.json, "updated_ms") > updated);
    resp_clear(&r);
    json_decref(first);

    /* DELETE removes the schedule and its state, and bumps the version. */
    cmd_int("HSET %s:{registry}:schedules:last_due every-second 1000", F.ns);
    long long v1 = version();
    http(&r, "DELETE", "/v1/schedules/every-second", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(json_object_size(r.json), 0);
    resp_clear(&r);
    CU_ASSERT_EQUAL(version(), v1 + 1);
    CU_ASSERT_EQUAL(cmd_int("HEXISTS %s:{registry}:schedules every-second", F.ns), 0);
    CU_ASSERT_EQUAL(cmd_int("HEXISTS %s:{registry}:schedules:last_due every-second", F.ns), 0);
    http(&r, "GET", "/v1/schedules/every-second", NULL);
    CU_ASSERT_EQUAL(r.status, 404);
    CU_ASSERT_STRING_EQUAL(err_code(&r), "NOT_FOUND");
    resp_clear(&r);
    http(&r, "DELETE", "/v1/schedules/every-second", NULL);
    CU_ASSERT_EQUAL(r.status, 404);
    resp_clear(&r);
    CU_ASSERT_EQUAL(version(), v1 + 1);
    http(&r, "DELETE", "/v1/schedules/a-cron", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    resp_clear(&r);
}

/* A topic bound to an Avro subject: the event is validated and converted once, at PUT. */
static void test_schema_topic(void)
{
    json_t *reg = json_pack("{s:s,s:s}", "schema",
                            "{\"type\":\"record\",\"name\":\"Tick\",\"fields\":[{\"name\":\"n\","
                            "\"type\":\"long\"}]}",
                            "schemaType", "AVRO");
    char *text = json_dumps(reg, JSON_COMPACT);
    msm_http_header_t hs[] = {{"Content-Type", "application/vnd.schemaregistry.v1+json"}};
    resp_t r;
    http_hs(&r, "POST", "/subjects/ticks-value/versions", text, strlen(text), hs, 1);
    CU_ASSERT_EQUAL_FATAL(r.status, 200);
    json_int_t id = jint(r.json, "id");
    resp_clear(&r);
    free(text);
    json_decref(reg);
    put_topic("ticks", "{\"schema_subject\":\"ticks-value\"}");
    put_schedule(&r, "avro",
                 "{\"topic\":\"ticks\",\"every_ms\":60000,\"event\":{\"data\":{\"x\":1}}}");
    CU_ASSERT_EQUAL(r.status, 400);
    CU_ASSERT_TRUE(has_detail(&r, "event.data.n")); /* the schema step's path */
    resp_clear(&r);
    put_schedule(&r, "avro",
                 "{\"topic\":\"ticks\",\"every_ms\":60000,\"event\":{\"data\":{\"n\":3}}}");
    CU_ASSERT_EQUAL_FATAL(r.status, 200);
    resp_clear(&r);
    Msm__V1__Event *ev = stored_envelope("avro");
    CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
    CU_ASSERT_EQUAL(ev->schema_id, id);
    CU_ASSERT_STRING_EQUAL(ev->content_type, "application/avro");
    CU_ASSERT_EQUAL(ev->payload.len, 1); /* zigzag 3 */
    CU_ASSERT_EQUAL(ev->payload.data[0], 6);
    msm_event_free(ev);
    http(&r, "DELETE", "/v1/schedules/avro", NULL);
    resp_clear(&r);
}

/* At most 1,000 schedules: a new one beyond is 409, an existing one may still change. */
static void test_bounded(void)
{
    enum { N = 1000 };
    const char **argv = calloc(2 + 2 * N, sizeof(*argv));
    char(*names)[16] = calloc(N, sizeof(*names));
    char key[128];
    snprintf(key, sizeof(key), "%s:{registry}:schedules", F.ns);
    const char *value = "{\"topic\":\"" TOPIC "\",\"every_ms\":3600000,\"event\":{\"data\":1},"
                        "\"created_ms\":1,\"envelope\":\"EgdzY2hlZC10\"}";
    argv[0] = "HSET";
    argv[1] = key;
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof(names[i]), "f%05d", i);
        argv[2 + 2 * i] = names[i];
        argv[3 + 2 * i] = value;
    }
    redisReply *rep = redisCommandArgv(F.sync, 2 + 2 * N, argv, NULL);
    CU_ASSERT_EQUAL(rep->integer, N);
    freeReplyObject(rep);
    resp_t r;
    put_schedule(&r, "one-too-many",
                 "{\"topic\":\"" TOPIC "\",\"every_ms\":1000,\"event\":{\"data\":1}}");
    CU_ASSERT_EQUAL(r.status, 409);
    CU_ASSERT_STRING_EQUAL(err_code(&r), "RESOURCE_EXHAUSTED");
    resp_clear(&r);
    put_schedule(&r, "f00042",
                 "{\"topic\":\"" TOPIC "\",\"every_ms\":2000,\"event\":{\"data\":2}}");
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(jint(r.json, "created_ms"), 1);
    resp_clear(&r);
    cmd_int("DEL %s", key);
    free(argv);
    free(names);
}

int main(void)
{
    CU_TestInfo tests[] = {
        {"invalid: 400 naming the field", test_invalid},
        {"unknown topic: 404", test_unknown_topic},
        {"PUT, GET, list, DELETE", test_round_trip},
        {"schema-bound topic", test_schema_topic},
        {"bounded count", test_bounded},
        CU_TEST_INFO_NULL,
    };
    CU_SuiteInfo suites[] = {
        {"schedules", suite_init, suite_clean, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return msm_test_run(suites);
}
