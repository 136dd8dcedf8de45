/* SPDX-License-Identifier: MIT */
/* The batch push body's fast reader (lambda-sdk/src/batch_fast.c) against the jansson path:
 * the bodies it must take, read into the same events; the bodies it must leave alone. */
#include "batch_fast_check.h"
#include "msm_test.h"

#include <stdio.h>
#include <string.h>

#define EV(members) "{\"specversion\":\"1.0\",\"id\":\"e1\"," members "}"

/* Each of @p bodies must get verdict @p want. */
static void check_all(const char *const *bodies, size_t n, batch_verdict_t want)
{
    static const char *const verdicts[] = {"declined", "taken", "differs"};
    for (size_t i = 0; i < n; i++) {
        char why[200] = "";
        batch_verdict_t v = batch_fast_check(bodies[i], strlen(bodies[i]), why, sizeof(why));
        if (v != want)
            fprintf(stderr, "body %zu: %s %s\n", i, verdicts[v], why);
        CU_ASSERT_EQUAL(v, want);
    }
}

static void test_taken(void)
{
    static const char *const taken[] = {
        "[]",
        " [ ] ",
        /* W1b's shape, as the router sends it */
        "[{\"specversion\":\"1.0\",\"id\":\"01J\",\"source\":\"/msm/topics/orders\","
        "\"type\":\"msm.event\",\"time\":\"2025-11-25T12:00:00.123Z\","
        "\"datacontenttype\":\"application/json\",\"msmsubscription\":\"orders-push\","
        "\"msmattempt\":1,\"msmkey\":\"k\",\"msmorderingkey\":\"o\",\"traceparent\":"
        "\"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\",\"region\":\"eu-west\","
        "\"data\":{\"order_id\":7,\"customer\":\"customer-42\",\"status\":\"paid\","
        "\"amount\":1299.5,\"items\":[\"sku-1\",\"sku-2\"]}},"
        "{\"specversion\":\"1.0\",\"id\":\"02\",\"source\":\"/shop\",\"type\":\"t\","
        "\"subject\":\"o-1\",\"msmsourceid\":\"p-1\",\"dataschema\":\"s\","
        "\"partitionkey\":\"pk-1\",\"data\":{}}]",
        "[" EV("\"data\":[1.0,1e5,-0,-0.0,0.1,1E+2,1e-400,5e-324,-12.5e-7,123456789012345678]") "]",
        "[" EV("\"data\":\"a\\u001f\\/\\u00e9\\ud83d\\ude00\\u007f\\\"\\\\\\b\\f\\n\\r\\t\"") "]",
        "[" EV("\"datacontenttype\":\"text/plain\",\"data\":\"x\\u00e9\\/\\n\"") "]",
        "[" EV("\"data\":\"plain\",\"datacontenttype\":\"text/plain\"") "]",
        "[" EV("\"datacontenttype\":\"application/cloudevents+json\",\"data\":\"s\"") "]",
        "[" EV("\"datacontenttype\":\"application/octet-stream\",\"data_base64\":\"aGk=\","
               "\"data\":{\"ignored\":true}") "]",
        "[" EV("\"data\":{\"\\u0061b\":{\"c\":[true,false,null,{}]},\"d\":\"\xc3\xa9\"}") "]",
        "[" EV("\"n\":5,\"o\":{\"x\":1},\"\\u0061ttr\":\"v\\u00e9\",\"e\":\"\",\"\":\"empty\"") "]",
        "[" EV("\"source\":5,\"type\":null,\"time\":7,\"msmkey\":[1],\"data_base64\":\"\"") "]",
        "[" EV("\"msmattempt\":2147483647,\"time\":\"not a time\",\"tracestate\":\"a=b\"") "]",
        "[" EV("\"msmsubscription\":\"\",\"data\":null") "]",
        "\n[\t" EV("\"a\" : \"1\" , \"data\" : [ 1 , 2 ]") " ,\r\n" EV("\"b\":\"2\"") " ]\n",
    };
    check_all(taken, sizeof(taken) / sizeof(taken[0]), BATCH_AGREES);
}

static void test_declined(void)
{
    char deep[200] = "[" EV("\"data\":");
    for (int i = 0; i < 40; i++)
        strcat(deep, "[");
    const char *const declined[] = {
        "",
        "{}",
        "{\"id\":\"x\"}",
        "[1]",
        "[{}]",
        "[null]",
        "[" EV("") ",]",
        "[" EV("") "] x",
        "[] x",
        "[]{\"i\xf0X",
        "[{\"id\":\"\"}]",
        "[{\"id\":5}]",
        "[{\"source\":\"s\"}]",
        "[{\"specversion\":\"0.3\",\"id\":\"e\"}]",
        "[" EV("\"msmattempt\":\"2\"") "]",
        "[" EV("\"msmattempt\":0") "]",
        "[" EV("\"msmattempt\":-1") "]",
        "[" EV("\"msmattempt\":1.0") "]",
        "[" EV("\"msmattempt\":null") "]",
        "[" EV("\"msmattempt\":2147483648") "]",
        "[" EV("\"id\":\"again\"") "]",
        "[" EV("\"a\":\"1\",\"a\":\"2\"") "]",
        "[" EV("\"a\":\"1\",\"\\u0061\":2") "]",
        "[" EV("\"data_base64\":\"!!\"") "]",
        "[" EV("\"data_base64\":5") "]",
        "[" EV("\"a\":\"\\u0000\"") "]",
        "[" EV("\"a\":\"\xff\"") "]",
        "[" EV("\"data\":{\"k\":1,\"k\":2}") "]",
        "[" EV("\"data\":1234567890123456789") "]",
        "[" EV("\"data\":1e400") "]",
        "[" EV("\"data\":\"\\ud800\"") "]",
        "[" EV("\"data\":01") "]",
        deep,
    };
    check_all(declined, sizeof(declined) / sizeof(declined[0]), BATCH_DECLINED);
}

static CU_TestInfo batch_fast_tests[] = {
    {"takes what the jansson path reads the same", test_taken},
    {"declines what it does not fully understand", test_declined},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"batch_fast", NULL, NULL, NULL, NULL, batch_fast_tests},
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return msm_test_run(suites);
}
