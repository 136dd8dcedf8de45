/* SPDX-License-Identifier: MIT */
/* Recurring schedules: the PUT body and the stored form (errors name their field), the JSON
 * round trip, due times of every_ms and cron, and the tick ids and keys every scheduler
 * derives alike. Pure functions. */
#include "msm_test.h"

#include "msm/base64.h"
#include "msm/envelope.h"
#include "msm/err.h"
#include "msm/schedule.h"
#include "msm/time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *parse(const char *text)
{
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    return j;
}

/* Validates @p text as a PUT body; the first error's field and message into @p field. */
static msm_schedule_t *put_body(const char *text, char *field, size_t n)
{
    json_t *body = parse(text);
    msm_json_err_t e;
    msm_json_err_init(&e);
    msm_schedule_t *s = msm_schedule_from_json("nightly", body, 0, &e);
    snprintf(field, n, "%s", msm_json_err_message(&e));
    msm_json_err_deinit(&e);
    json_decref(body);
    return s;
}

static void test_body_defaults(void)
{
    char msg[256];
    msm_schedule_t *s = put_body("{\"topic\":\"orders\",\"every_ms\":60000,\"event\":{\"data\":1}}",
                                 msg, sizeof(msg));
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_STRING_EQUAL(s->name, "nightly");
    CU_ASSERT_STRING_EQUAL(s->topic, "orders");
    CU_ASSERT_PTR_NULL(s->cron);
    CU_ASSERT_EQUAL(s->every_ms, 60000);
    CU_ASSERT_STRING_EQUAL(s->timezone, "UTC");
    CU_ASSERT_EQUAL(s->catch_up, MSM_CATCH_UP_LAST);
    CU_ASSERT_PTR_NULL(s->envelope);
    json_t *j = msm_schedule_to_json(s, 0);
    CU_ASSERT_TRUE(json_is_null(json_object_get(j, "cron")));
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "every_ms")), 60000);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "catch_up")), "last");
    CU_ASSERT_PTR_NULL(json_object_get(j, "envelope"));
    /* An answer PUT back as it is validates (cron null, every_ms, created_ms, ...). */
    msm_json_err_t e;
    msm_json_err_init(&e);
    msm_schedule_t *again = msm_schedule_from_json("nightly", j, 0, &e);
    CU_ASSERT_PTR_NOT_NULL(again);
    CU_ASSERT_EQUAL(msm_json_err_count(&e), 0);
    msm_json_err_deinit(&e);
    msm_schedule_free(again);
    json_decref(j);
    msm_schedule_free(s);

    s = put_body("{\"topic\":\"orders\",\"cron\":\"*/5 * * * *\",\"every_ms\":null,"
                 "\"timezone\":\"UTC\",\"catch_up\":\"all\",\"event\":{\"data\":1}}",
                 msg, sizeof(msg));
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_STRING_EQUAL(s->cron, "*/5 * * * *");
    CU_ASSERT_EQUAL(s->every_ms, 0);
    CU_ASSERT_EQUAL(s->catch_up, MSM_CATCH_UP_ALL);
    msm_schedule_free(s);
}

static void test_body_errors(void)
{
    static const struct {
        const char *body, *message; /* the start of the first error's "field: description" */
    } cases[] = {
        {"[]", "$: must be an object"},
        {"{\"every_ms\":1000,\"event\":{}}", "topic: is required"},
        {"{\"topic\":\"a b\",\"every_ms\":1000,\"event\":{}}", "topic: must match"},
        {"{\"topic\":\"t\",\"event\":{}}", "cron: is required (or every_ms)"},
        {"{\"topic\":\"t\",\"cron\":null,\"every_ms\":null,\"event\":{}}", "cron: is required"},
        {"{\"topic\":\"t\",\"cron\":\"* * * * *\",\"every_ms\":1000,\"event\":{}}",
         "every_ms: cannot be used with cron"},
        {"{\"topic\":\"t\",\"every_ms\":999,\"event\":{}}", "every_ms: must be between 1000"},
        {"{\"topic\":\"t\",\"every_ms\":31622400001,\"event\":{}}", "every_ms: must be between"},
        {"{\"topic\":\"t\",\"every_ms\":1000.5,\"event\":{}}", "every_ms: must be an integer"},
        {"{\"topic\":\"t\",\"every_ms\":\"1000\",\"event\":{}}", "every_ms: must be an integer"},
        {"{\"topic\":\"t\",\"cron\":\"\",\"event\":{}}", "cron: must not be empty"},
        {"{\"topic\":\"t\",\"cron\":5,\"event\":{}}", "cron: must be a string"},
        {"{\"topic\":\"t\",\"cron\":\"61 * * * *\",\"event\":{}}",
         "cron: minute field: 61 is out of range 0-59"},
        {"{\"topic\":\"t\",\"cron\":\"* * * *\",\"event\":{}}", "cron: must have 5 fields"},
        {"{\"topic\":\"t\",\"cron\":\"0 0 30 2 *\",\"event\":{}}",
         "cron: matches no minute in the next 30 years"},
        {"{\"topic\":\"t\",\"every_ms\":1000,\"timezone\":\"Europe/Paris\",\"event\":{}}",
         "timezone: only \"UTC\" is supported"},
        {"{\"topic\":\"t\",\"every_ms\":1000,\"timezone\":\"utc\",\"event\":{}}", "timezone: only"},
        {"{\"topic\":\"t\",\"every_ms\":1000,\"catch_up\":\"some\",\"event\":{}}",
         "catch_up: must be \"none\", \"last\" or \"all\""},
        {"{\"topic\":\"t\",\"every_ms\":1000}", "event: is required"},
        {"{\"topic\":\"t\",\"every_ms\":1000,\"event\":[1]}", "event: must be an object"},
        {"{\"topic\":\"t\",\"every_ms\":1000,\"event\":{},\"name\":\"other\"}",
         "name: must match the name in the path"},
        {"{\"topic\":\"t\",\"every_ms\":1000,\"event\":{},\"start\":1}", "start: unknown field"},
        {"{\"topic\":\"t\",\"every_ms\":1000,\"event\":{},\"envelope\":\"AA==\"}",
         "envelope: is set by msm"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char msg[256];
        msm_schedule_t *s = put_body(cases[i].body, msg, sizeof(msg));
        if (s || strncmp(msg, cases[i].message, strlen(cases[i].message)) != 0)
            fprintf(stderr, "\n  %s: got \"%s\", want \"%s\"", cases[i].body, msg,
                    cases[i].message);
        CU_ASSERT_PTR_NULL(s);
        CU_ASSERT_EQUAL(strncmp(msg, cases[i].message, strlen(cases[i].message)), 0);
        msm_schedule_free(s);
    }
}

static void test_stored(void)
{
    Msm__V1__Event ev = MSM__V1__EVENT__INIT;
    ev.topic = "orders";
    ev.key = "k";
    ev.payload.data = (uint8_t *)"{\"n\":1}";
    ev.payload.len = 7;
    ev.content_type = "application/json";
    ev.priority = 7;
    uint8_t packed[256];
    size_t len = msm__v1__event__pack(&ev, packed);
    char b64[512];
    msm_base64_encode(packed, len, b64);
    char text[1024];
    snprintf(text, sizeof(text),
             "{\"name\":\"nightly\",\"topic\":\"orders\",\"cron\":\"0 3 * * *\",\"every_ms\":null,"
             "\"timezone\":\"UTC\",\"catch_up\":\"none\",\"event\":{\"data\":{\"n\":1}},"
             "\"created_ms\":5,\"updated_ms\":6,\"envelope\":\"%s\"}",
             b64);
    json_t *j = parse(text);
    msm_json_err_t e;
    msm_json_err_init(&e);
    msm_schedule_t *s = msm_schedule_from_json("nightly", j, 1, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(s->envelope_len, len);
    CU_ASSERT_EQUAL(memcmp(s->envelope, packed, len), 0);
    CU_ASSERT_EQUAL(s->created_ms, 5);
    CU_ASSERT_EQUAL(s->updated_ms, 6);
    CU_ASSERT_EQUAL(s->catch_up, MSM_CATCH_UP_NONE);
    /* The stored JSON round-trips; a copy is equal and independent. */
    json_t *back = msm_schedule_to_json(s, 1);
    CU_ASSERT_TRUE(json_equal(back, j));
    msm_schedule_t *d = msm_schedule_dup(s);
    msm_schedule_free(s);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    CU_ASSERT_EQUAL(memcmp(d->envelope, packed, len), 0);
    CU_ASSERT_STRING_EQUAL(d->cron, "0 3 * * *");
    msm_schedule_free(d);
    json_decref(back);
    json_decref(j);

    /* The stored form needs its envelope, and a real one. */
    static const char *const bad[] = {
        "{\"topic\":\"orders\",\"every_ms\":1000,\"event\":{}}",
        "{\"topic\":\"orders\",\"every_ms\":1000,\"event\":{},\"envelope\":\"not base64!\"}",
        "{\"topic\":\"orders\",\"every_ms\":1000,\"event\":{},\"envelope\":\"/////w==\"}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *b = parse(bad[i]);
        msm_json_err_deinit(&e);
        msm_json_err_init(&e);
        CU_ASSERT_PTR_NULL(msm_schedule_from_json("nightly", b, 1, &e));
        CU_ASSERT_PTR_NOT_NULL(strstr(msm_json_err_message(&e), "envelope"));
        json_decref(b);
    }
    msm_json_err_deinit(&e);
}

static void test_next(void)
{
    msm_schedule_t s = {.every_ms = 1000};
    CU_ASSERT_EQUAL(msm_schedule_next(&s, 0), 1000);
    CU_ASSERT_EQUAL(msm_schedule_next(&s, 999), 1000);
    CU_ASSERT_EQUAL(msm_schedule_next(&s, 1000), 2000);
    CU_ASSERT_EQUAL(msm_schedule_next(&s, -1), 0);
    s.every_ms = 7000; /* multiples of every_ms since the epoch */
    CU_ASSERT_EQUAL(msm_schedule_next(&s, 1700000000123), 1700000001000);
    s.every_ms = 60000;
    int64_t t;
    msm_time_parse("2026-03-01T10:00:30Z", &t);
    char buf[32];
    msm_time_format(msm_schedule_next(&s, t), buf, sizeof(buf));
    CU_ASSERT_STRING_EQUAL(buf, "2026-03-01T10:01:00.000Z");
    /* cron goes to msm_cron_next */
    msm_schedule_t c = {.cron = "0 3 * * *"};
    CU_ASSERT_EQUAL_FATAL(msm_cron_parse(c.cron, &c.cron_expr, NULL, 0), MSM_OK);
    msm_time_format(msm_schedule_next(&c, t), buf, sizeof(buf));
    CU_ASSERT_STRING_EQUAL(buf, "2026-03-02T03:00:00.000Z");
}

static void test_tick_ids(void)
{
    char a[MSM_ID_STR_SIZE], b[MSM_ID_STR_SIZE], c[MSM_ID_STR_SIZE], d[MSM_ID_STR_SIZE];
    int64_t due = 1772359200000; /* 2026-03-01T10:00:00Z */
    msm_schedule_tick_id("nightly", due, a);
    msm_schedule_tick_id("nightly", due, b);
    msm_schedule_tick_id("nightly", due + 1000, c);
    msm_schedule_tick_id("nightly2", due, d);
    CU_ASSERT_STRING_EQUAL(a, b); /* whoever computes it */
    CU_ASSERT_STRING_NOT_EQUAL(a, c);
    CU_ASSERT_STRING_NOT_EQUAL(a, d);
    msm_id_t id;
    CU_ASSERT_EQUAL_FATAL(msm_id_parse(a, &id), MSM_OK);
    CU_ASSERT_EQUAL(msm_id_version(&id), 7);
    CU_ASSERT_EQUAL(msm_id_timestamp_ms(&id), due); /* sorts by due time */
    CU_ASSERT_TRUE(strcmp(a, c) < 0);
    char key[MSM_SCHEDULE_TICK_KEY_MAX];
    CU_ASSERT_EQUAL(msm_schedule_tick_key("nightly", due, key, sizeof(key)),
                    (int)strlen("msm-schedule:nightly:1772359200000"));
    CU_ASSERT_STRING_EQUAL(key, "msm-schedule:nightly:1772359200000");
}

static CU_TestInfo tests[] = {
    {"PUT body: defaults, answer round trip", test_body_defaults},
    {"PUT body: errors name their field", test_body_errors},
    {"stored form: envelope, round trip, copy", test_stored},
    {"due times", test_next},
    {"tick ids and keys", test_tick_ids},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"schedule", NULL, NULL, NULL, NULL, tests},
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return msm_test_run(suites);
}
