/* SPDX-License-Identifier: MIT */
/* CDC sources, changes and their envelopes (msm/cdc.h): what the frontend's push and the
 * scheduler's pull share. Pure functions. */
#include "msm_test.h"
#include "msm/cdc.h"
#include "msm/err.h"

#include <stdlib.h>
#include <string.h>

static json_t *parse(const char *text)
{
    return json_loads(text, 0, NULL);
}

static void test_source(void)
{
    msm_json_err_t e;
    msm_json_err_init(&e);
    json_t *j = parse("{\"topic\":\"files\",\"range_url\":\"http://h/changes\","
                      "\"partitions\":[\"p0\",\"p1\"],\"batch_size\":7}");
    msm_cdc_source_t *s = msm_cdc_source_from_json("db", j, &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_STRING_EQUAL(s->topic, "files");
    CU_ASSERT_STRING_EQUAL(s->range_url, "http://h/changes");
    CU_ASSERT_EQUAL(s->npartitions, 2);
    CU_ASSERT_EQUAL(s->poll_interval_ms, MSM_CDC_POLL_DEFAULT_MS);
    CU_ASSERT_EQUAL(s->batch_size, 7);
    CU_ASSERT_TRUE(msm_cdc_source_has_partition(s, "p1"));
    CU_ASSERT_FALSE(msm_cdc_source_has_partition(s, "p2"));
    /* stored form round trip */
    json_t *stored = msm_cdc_source_to_json(s);
    msm_cdc_source_t *back = msm_cdc_source_from_json("db", stored, &e);
    CU_ASSERT_PTR_NOT_NULL(back);
    CU_ASSERT_EQUAL(msm_json_err_count(&e), 0);
    if (back)
        CU_ASSERT_STRING_EQUAL(back->range_url, s->range_url);
    msm_cdc_source_free(back);
    json_decref(stored);
    msm_cdc_source_free(s);
    json_decref(j);
    /* push only: no range_url */
    j = parse("{\"topic\":\"files\",\"partitions\":[\"p0\"]}");
    s = msm_cdc_source_from_json("db", j, &e);
    CU_ASSERT_PTR_NOT_NULL(s);
    CU_ASSERT_PTR_NULL(s ? s->range_url : "x");
    msm_cdc_source_free(s);
    json_decref(j);
    /* errors name their field */
    j = parse("{\"topic\":\"files\",\"range_url\":\"ftp://x\",\"partitions\":[\"p0\",\"p0\"],"
              "\"batch_size\":0,\"extra\":1}");
    CU_ASSERT_PTR_NULL(msm_cdc_source_from_json("db", j, &e));
    CU_ASSERT_TRUE(msm_json_err_count(&e) >= 4);
    json_decref(j);
    msm_json_err_deinit(&e);
}

static size_t check(const char *changes, size_t *nbig)
{
    msm_json_err_t e, big;
    msm_json_err_init(&e);
    msm_json_err_init(&big);
    json_t *j = parse(changes);
    msm_cdc_changes_check(j, &e, &big);
    size_t n = msm_json_err_count(&e);
    *nbig = msm_json_err_count(&big);
    json_decref(j);
    msm_json_err_deinit(&e);
    msm_json_err_deinit(&big);
    return n;
}

static void test_changes_check(void)
{
    size_t big;
    CU_ASSERT_EQUAL(check("[{\"sequence\":1,\"op\":\"create\",\"entity\":\"a\",\"data\":{}},"
                          "{\"sequence\":5,\"op\":\"delete\",\"entity\":\"a\"}]",
                          &big),
                    0);
    CU_ASSERT_EQUAL(big, 0);
    /* not increasing, unknown op, missing data, unknown field, empty entity */
    CU_ASSERT_EQUAL(check("[{\"sequence\":2,\"op\":\"create\",\"entity\":\"a\",\"data\":1},"
                          "{\"sequence\":2,\"op\":\"upsert\",\"entity\":\"a\",\"data\":1},"
                          "{\"sequence\":3,\"op\":\"update\",\"entity\":\"a\"},"
                          "{\"sequence\":4,\"op\":\"delete\",\"entity\":\"\",\"x\":1}]",
                          &big),
                    5);
    CU_ASSERT_EQUAL(check("[{\"sequence\":1,\"op\":\"create\",\"entity\":\"a\\u0001\","
                          "\"data\":1}, 7]",
                          &big),
                    2);
    char *longe = malloc(MSM_CDC_ENTITY_MAX + 200);
    strcpy(longe, "[{\"sequence\":1,\"op\":\"delete\",\"entity\":\"");
    size_t at = strlen(longe);
    memset(longe + at, 'x', MSM_CDC_ENTITY_MAX + 1);
    strcpy(longe + at + MSM_CDC_ENTITY_MAX + 1, "\"}]");
    CU_ASSERT_EQUAL(check(longe, &big), 0);
    CU_ASSERT_EQUAL(big, 1);
    free(longe);
}

static void test_payload_and_envelope(void)
{
    json_t *j = parse("[{\"sequence\":9,\"op\":\"update\",\"entity\":\"f1\",\"data\":{\"n\":1}},"
                      "{\"sequence\":10,\"op\":\"delete\",\"entity\":\"f1\"}]");
    msm_cdc_change_t c[2];
    msm_cdc_change_get(json_array_get(j, 0), &c[0]);
    msm_cdc_change_get(json_array_get(j, 1), &c[1]);
    CU_ASSERT_EQUAL(c[0].sequence, 9);
    CU_ASSERT_EQUAL(c[0].op, MSM__V1__OPERATION__OPERATION_UPDATE);
    CU_ASSERT_EQUAL(c[1].op, MSM__V1__OPERATION__OPERATION_DELETE);
    CU_ASSERT_PTR_NULL(c[1].data);
    msm_json_err_t e, big;
    msm_json_err_init(&e);
    msm_json_err_init(&big);
    msm_cdc_payload_t p;
    CU_ASSERT_EQUAL_FATAL(msm_cdc_payload(&c[0], NULL, 0, 1024, &p, &e, &big), MSM_OK);
    CU_ASSERT_EQUAL(p.len, 7);
    CU_ASSERT_EQUAL(memcmp(p.data, "{\"n\":1}", 7), 0);
    CU_ASSERT_STRING_EQUAL(p.content_type, "application/json");
    CU_ASSERT_EQUAL(p.schema_id, 0);
    free(p.data);
    /* a delete without data is a tombstone, whatever the schema */
    char err[128];
    const char *avro = "{\"type\":\"record\",\"name\":\"F\",\"fields\":[{\"name\":\"n\","
                       "\"type\":\"int\"}]}";
    msm_schema_t *s =
        msm_schema_compile(MSM_SCHEMA_AVRO, avro, strlen(avro), NULL, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL_FATAL(msm_cdc_payload(&c[1], s, 3, 1024, &p, &e, &big), MSM_OK);
    CU_ASSERT_EQUAL(p.len, 4);
    CU_ASSERT_EQUAL(memcmp(p.data, "null", 4), 0);
    CU_ASSERT_EQUAL(p.schema_id, 0);
    free(p.data);
    /* with a schema: validated and converted (Avro int 1 is the zigzag byte 02) */
    CU_ASSERT_EQUAL_FATAL(msm_cdc_payload(&c[0], s, 3, 1024, &p, &e, &big), MSM_OK);
    CU_ASSERT_EQUAL(p.len, 1);
    CU_ASSERT_EQUAL(p.data[0], 2);
    CU_ASSERT_STRING_EQUAL(p.content_type, "application/avro");
    CU_ASSERT_EQUAL(p.schema_id, 3);
    free(p.data);
    /* refused by the schema, or too large */
    json_t *bad =
        parse("{\"sequence\":1,\"op\":\"create\",\"entity\":\"x\",\"data\":{\"n\":\"a\"}}");
    msm_cdc_change_t b;
    msm_cdc_change_get(bad, &b);
    CU_ASSERT_EQUAL(msm_cdc_payload(&b, s, 3, 1024, &p, &e, &big), MSM_ERR_INVALID);
    CU_ASSERT_TRUE(msm_json_err_count(&e) > 0);
    CU_ASSERT_EQUAL(msm_cdc_payload(&c[0], NULL, 0, 3, &p, &e, &big), MSM_ERR_INVALID);
    CU_ASSERT_EQUAL(msm_json_err_count(&big), 1);
    json_decref(bad);
    msm_schema_free(s);
    /* the envelope: key and ordering key = entity, every cdc_* field */
    Msm__V1__Event env = MSM__V1__EVENT__INIT;
    msm_cdc_envelope(&env, "db", "p0", &c[0]);
    CU_ASSERT_STRING_EQUAL(env.key, "f1");
    CU_ASSERT_STRING_EQUAL(env.ordering_key, "f1");
    CU_ASSERT_STRING_EQUAL(env.cdc_source, "db");
    CU_ASSERT_STRING_EQUAL(env.cdc_partition, "p0");
    CU_ASSERT_EQUAL(env.cdc_sequence, 9);
    CU_ASSERT_EQUAL(env.cdc_operation, MSM__V1__OPERATION__OPERATION_UPDATE);
    CU_ASSERT_STRING_EQUAL(env.cdc_entity, "f1");
    msm_json_err_deinit(&e);
    msm_json_err_deinit(&big);
    json_decref(j);
}

static CU_TestInfo tests[] = {
    {"sources: parsed, stored, errors by field", test_source},
    {"changes: checked like a push body", test_changes_check},
    {"payloads (tombstone, JSON, schema) and the envelope", test_payload_and_envelope},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"cdc", NULL, NULL, NULL, NULL, tests},
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return msm_test_run(suites);
}
