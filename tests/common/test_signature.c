/* SPDX-License-Identifier: MIT */
/* Msm-Signature v1 against OpenSSL's one-shot HMAC() over the text built in memory. */
#include "msm_test.h"
#include "msm/err.h"
#include "msm/signature.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

static void expect_matches(const char *secret, const char *t, const char *id, const char *body,
                           size_t len)
{
    char text[512];
    int n = snprintf(text, sizeof(text), "%s.%s.", t, id);
    memcpy(text + n, body, len);
    unsigned char mac[32];
    unsigned maclen = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)text,
         (size_t)n + len, mac, &maclen);
    char want[65];
    for (unsigned i = 0; i < maclen; i++)
        snprintf(want + 2 * i, 3, "%02x", mac[i]);
    char got[MSM_SIGNATURE_HEX_LEN + 1];
    CU_ASSERT_EQUAL(msm_signature_v1(secret, t, strlen(t), id, body, len, got), MSM_OK);
    CU_ASSERT_STRING_EQUAL(got, want);
}

static void test_v1(void)
{
    expect_matches("s3cret", "1700000000", "019b-evt", "{\"a\":1}", 7);
    expect_matches("k", "1", "id", "", 0);                       /* empty body */
    expect_matches("another key", "1795000000", "x", "\0\1\2bin", 6); /* binary body */
    /* t is taken by length: a longer buffer signs only its first tlen bytes. */
    char a[65], b[65];
    CU_ASSERT_EQUAL(msm_signature_v1("k", "123XYZ", 3, "id", "b", 1, a), MSM_OK);
    CU_ASSERT_EQUAL(msm_signature_v1("k", "123", 3, "id", "b", 1, b), MSM_OK);
    CU_ASSERT_STRING_EQUAL(a, b);
    /* Any change of secret, time, id or body changes the signature. */
    CU_ASSERT_EQUAL(msm_signature_v1("k2", "123", 3, "id", "b", 1, a), MSM_OK);
    CU_ASSERT_STRING_NOT_EQUAL(a, b);
    CU_ASSERT_EQUAL(msm_signature_v1("k", "124", 3, "id", "b", 1, a), MSM_OK);
    CU_ASSERT_STRING_NOT_EQUAL(a, b);
    CU_ASSERT_EQUAL(msm_signature_v1("k", "123", 3, "iD", "b", 1, a), MSM_OK);
    CU_ASSERT_STRING_NOT_EQUAL(a, b);
    CU_ASSERT_EQUAL(msm_signature_v1("k", "123", 3, "id", "c", 1, a), MSM_OK);
    CU_ASSERT_STRING_NOT_EQUAL(a, b);
}

static CU_TestInfo tests[] = {
    {"v1 is HMAC-SHA256 of <t>.<id>.<body>", test_v1},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"signature", NULL, NULL, NULL, NULL, tests},
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return msm_test_run(suites);
}
