/* SPDX-License-Identifier: MIT */
/* The envelope: pack/unpack round trips, garbage rejected, JSON views; base64. */
#include "msm_test.h"
#include "msm/base64.h"
#include "msm/envelope.h"
#include "msm/err.h"

#include <stdlib.h>
#include <string.h>

static void test_base64_vectors(void)
{
    /* RFC 4648 section 10 test vectors. */
    const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    const char *coded[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        char enc[32];
        size_t n = msm_base64_encode(plain[i], strlen(plain[i]), enc);
        CU_ASSERT_EQUAL(n, strlen(coded[i]));
        CU_ASSERT_STRING_EQUAL(enc, coded[i]);
        char dec[32];
        size_t dn = 0;
        CU_ASSERT_EQUAL(msm_base64_decode(coded[i], strlen(coded[i]), dec, &dn), MSM_OK);
        CU_ASSERT_EQUAL(dn, strlen(plain[i]));
        CU_ASSERT_EQUAL(memcmp(dec, plain[i], dn), 0);
    }
}

static void test_base64_rejects_bad_input(void)
{
    const char *bad[] = {"Zg=", "Zg", "Z===", "Zm9v!", "Zh==", "Zm9=", "=Zm9", "Zm 9v", "Zg==Zg=="};
    char out[32];
    size_t n;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CU_ASSERT_EQUAL(msm_base64_decode(bad[i], strlen(bad[i]), out, &n), MSM_ERR_PARSE);
}

static void test_base64_binary_round_trip(void)
{
    unsigned char in[1000];
    for (size_t i = 0; i < sizeof(in); i++)
        in[i] = (unsigned char)(i * 37 + 11);
    for (size_t len = 0; len < 40; len++) {
        char enc[2000];
        unsigned char dec[1000];
        size_t n = msm_base64_encode(in, len, enc), dn = 0;
        CU_ASSERT_EQUAL(n + 1, msm_base64_encoded_size(len));
        CU_ASSERT_EQUAL(msm_base64_decode(enc, n, dec, &dn), MSM_OK);
        CU_ASSERT_EQUAL(dn, len);
        CU_ASSERT_EQUAL(memcmp(in, dec, len), 0);
    }
}

/* Lenient: URL-safe alphabet and missing padding are fine; the rest still is not. */
static void test_base64_lenient(void)
{
    const struct {
        const char *in;
        const char *plain; /* NULL: rejected */
        size_t len;
    } cases[] = {
        {"Zm9vYg==", "foob", 4}, {"Zm9vYg", "foob", 4}, {"Zm9vYmE", "fooba", 5},
        {"-_8", "\xfb\xff", 2}, {"+/8=", "\xfb\xff", 2}, {"", "", 0},
        {"Z", NULL, 0},          {"Zm9v!", NULL, 0},   {"Zg=", NULL, 0},
        {"Zg===", NULL, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = strlen(cases[i].in), out_len = 0;
        int rc = msm_base64_lenient_measure(cases[i].in, &n, &out_len);
        if (!cases[i].plain) {
            CU_ASSERT_EQUAL(rc, MSM_ERR_PARSE);
            continue;
        }
        CU_ASSERT_EQUAL_FATAL(rc, MSM_OK);
        CU_ASSERT_EQUAL(out_len, cases[i].len);
        char dec[16];
        msm_base64_lenient_decode(cases[i].in, n, dec);
        CU_ASSERT_EQUAL(memcmp(dec, cases[i].plain, out_len), 0);
    }
}

static void test_event_round_trip(void)
{
    Msm__V1__Event ev = MSM__V1__EVENT__INIT;
    ev.id = "0193a1b2-0000-7000-8000-000000000001";
    ev.topic = "orders";
    ev.key = "customer-7";
    ev.ordering_key = "order-42";
    Msm__V1__Event__AttributesEntry a1 = MSM__V1__EVENT__ATTRIBUTES_ENTRY__INIT;
    a1.key = "kind";
    a1.value = "image";
    Msm__V1__Event__AttributesEntry *attrs[] = {&a1};
    ev.attributes = attrs;
    ev.n_attributes = 1;
    ev.payload.data = (uint8_t *)"{\"total\":12.5}";
    ev.payload.len = strlen("{\"total\":12.5}");
    ev.content_type = "application/json";
    ev.publish_time_ms = 1764072000123;
    ev.priority = 9;
    ev.cdc_source = "files";
    ev.cdc_sequence = 77;
    ev.cdc_operation = MSM__V1__OPERATION__OPERATION_UPDATE;

    msm_buf_t buf = {0};
    CU_ASSERT_EQUAL_FATAL(msm_pb_pack(&ev.base, &buf), MSM_OK);
    Msm__V1__Event *back = msm_event_unpack(buf.data, buf.len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(back);
    CU_ASSERT_STRING_EQUAL(back->id, ev.id);
    CU_ASSERT_STRING_EQUAL(back->ordering_key, "order-42");
    CU_ASSERT_STRING_EQUAL(msm_event_attr(back, "kind"), "image");
    CU_ASSERT_PTR_NULL(msm_event_attr(back, "missing"));
    CU_ASSERT_EQUAL(back->priority, 9);
    CU_ASSERT_EQUAL(back->cdc_sequence, 77);

    json_t *j = msm_event_to_json(back);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "publish_time")),
                           "2025-11-25T12:00:00.123Z");
    CU_ASSERT_EQUAL(json_real_value(json_object_get(json_object_get(j, "data"), "total")), 12.5);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "cdc_operation")), "update");
    CU_ASSERT_PTR_NULL(json_object_get(j, "data_base64"));
    json_decref(j);

    /* A non-JSON payload shows as base64; the buffer is reused without growing. */
    back->content_type[0] = 'x';
    j = msm_event_to_json(back);
    CU_ASSERT_PTR_NOT_NULL(json_object_get(j, "data_base64"));
    json_decref(j);
    size_t cap = buf.cap;
    CU_ASSERT_EQUAL(msm_pb_pack(&back->base, &buf), MSM_OK);
    CU_ASSERT_EQUAL(buf.cap, cap);
    msm_event_free(back);
    msm_buf_deinit(&buf);
}

static void test_unpack_rejects_garbage(void)
{
    const unsigned char truncated[] = {0x0a, 0x10, 'a', 'b'};      /* string longer than data */
    const unsigned char bad_wire[] = {0x0f, 0x01};                  /* wire type 7 */
    CU_ASSERT_PTR_NULL(msm_event_unpack(truncated, sizeof(truncated)));
    CU_ASSERT_PTR_NULL(msm_event_unpack(bad_wire, sizeof(bad_wire)));
    CU_ASSERT_PTR_NULL(msm_task_unpack(truncated, sizeof(truncated)));
    CU_ASSERT_PTR_NULL(msm_outcome_unpack(bad_wire, sizeof(bad_wire)));
    /* Random bytes never crash (they may happen to decode). */
    unsigned char noise[64];
    unsigned seed = 12345;
    for (int round = 0; round < 2000; round++) {
        for (size_t i = 0; i < sizeof(noise); i++)
            noise[i] = (unsigned char)((seed = seed * 1103515245u + 12345u) >> 16);
        msm_event_free(msm_event_unpack(noise, (size_t)(round % 64)));
        msm_task_free(msm_task_unpack(noise, (size_t)(round % 64)));
    }
}

static void test_task_and_outcome(void)
{
    Msm__V1__Event ev = MSM__V1__EVENT__INIT;
    ev.id = "e1";
    Msm__V1__Task task = MSM__V1__TASK__INIT;
    task.event = &ev;
    task.subscription = "orders-sub";
    task.attempt = 3;
    task.state = MSM__V1__TASK_STATE__TASK_STATE_RETRYING;
    msm_buf_t buf = {0};
    CU_ASSERT_EQUAL(msm_pb_pack(&task.base, &buf), MSM_OK);
    Msm__V1__Task *t = msm_task_unpack(buf.data, buf.len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_STRING_EQUAL(t->event->id, "e1");
    CU_ASSERT_EQUAL(t->attempt, 3);
    CU_ASSERT_STRING_EQUAL(msm_task_state_name(t->state), "retrying");
    msm_task_free(t);

    Msm__V1__DeliveryOutcome out = MSM__V1__DELIVERY_OUTCOME__INIT;
    out.event_id = "e1";
    out.kind = MSM__V1__OUTCOME_KIND__OUTCOME_KIND_FATAL;
    out.http_status = 500;
    CU_ASSERT_EQUAL(msm_pb_pack(&out.base, &buf), MSM_OK);
    Msm__V1__DeliveryOutcome *o = msm_outcome_unpack(buf.data, buf.len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_EQUAL(o->kind, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_FATAL);
    CU_ASSERT_EQUAL(o->http_status, 500);
    msm_outcome_free(o);
    msm_buf_deinit(&buf);
}

static void test_names(void)
{
    const char *states[] = {"pending", "delayed", "running", "retrying", "succeeded", "dead"};
    for (int i = 0; i < 6; i++) {
        Msm__V1__TaskState s;
        CU_ASSERT_EQUAL(msm_task_state_parse(states[i], &s), MSM_OK);
        CU_ASSERT_STRING_EQUAL(msm_task_state_name(s), states[i]);
    }
    Msm__V1__TaskState s;
    CU_ASSERT_EQUAL(msm_task_state_parse("unspecified", &s), MSM_ERR_INVALID);
    CU_ASSERT_EQUAL(msm_task_state_parse("Dead", &s), MSM_ERR_INVALID);
    Msm__V1__Operation op;
    CU_ASSERT_EQUAL(msm_operation_parse("delete", &op), MSM_OK);
    CU_ASSERT_EQUAL(op, MSM__V1__OPERATION__OPERATION_DELETE);
    CU_ASSERT_EQUAL(msm_operation_parse("upsert", &op), MSM_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(msm_operation_name((Msm__V1__Operation)99), "");
}

static CU_TestInfo tests[] = {
    {"base64 RFC 4648 vectors", test_base64_vectors},
    {"base64 rejects malformed input", test_base64_rejects_bad_input},
    {"base64 binary round trips", test_base64_binary_round_trip},
    {"base64 lenient (URL-safe, unpadded)", test_base64_lenient},
    {"event pack/unpack and JSON view", test_event_round_trip},
    {"unpack rejects garbage, never crashes", test_unpack_rejects_garbage},
    {"task and outcome round trips", test_task_and_outcome},
    {"state and operation names", test_names},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"envelope", NULL, NULL, NULL, NULL, tests},
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return msm_test_run(suites);
}
