/* SPDX-License-Identifier: MIT */
/* Msm-Signature v1 and v2 against OpenSSL's one-shot HMAC() and SHA256() over the text
 * built in memory here, and against the worked example of docs/push.md (its values computed
 * with another HMAC implementation). */
#include "msm_test.h"
#include "msm/err.h"
#include "msm/signature.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
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

/* ---- v2 ---- */

static void hex_of(const unsigned char *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

/* The v2 text and signature built independently: snprintf and one-shot calls. */
static void expect_v2(const char *secret, const msm_signature_fields_t *f, const void *body,
                      size_t len)
{
    unsigned char md[32];
    char body_hex[65];
    SHA256(body, len, md);
    hex_of(md, 32, body_hex);
    char text[1024];
    int n = snprintf(text, sizeof(text), "v2\n%s\n%s\n%s\n%s\n%s\n%s", f->sf_t, f->sf_id,
                     f->sf_subscription, f->sf_attempt, f->sf_deadline, body_hex);
    unsigned char mac[32];
    unsigned maclen = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)text, (size_t)n, mac,
         &maclen);
    char want[65];
    hex_of(mac, 32, want);

    char got_sha[MSM_SIGNATURE_HEX_LEN + 1], got_text[1024], got[MSM_SIGNATURE_HEX_LEN + 1];
    CU_ASSERT_EQUAL(msm_signature_sha256_hex(body, len, got_sha), MSM_OK);
    CU_ASSERT_STRING_EQUAL(got_sha, body_hex);
    CU_ASSERT_EQUAL(msm_signature_v2_text(f, got_sha, got_text, sizeof(got_text)), (size_t)n);
    CU_ASSERT_STRING_EQUAL(got_text, text);
    CU_ASSERT_EQUAL(msm_signature_v2(secret, f, got_sha, got), MSM_OK);
    CU_ASSERT_STRING_EQUAL(got, want);
}

/* docs/push.md "Signatures": the worked example, single and batch. */
#define EX_SECRET   "s3cret"
#define EX_BODY     "{\"order\":42}"
#define EX_BATCH                                                                                   \
    "[{\"specversion\":\"1.0\",\"id\":\"e1\",\"source\":\"/msm/topics/orders\",\"type\":"          \
    "\"msm.event\",\"msmsubscription\":\"orders-push\",\"msmattempt\":1,\"data\":{\"order\":42}}]"
static const msm_signature_fields_t ex_single = {
    "1764072000", "0190a3e2-0000-7000-8000-000000000001", "orders-push", "3", "1764072030000"};
static const msm_signature_fields_t ex_batch = {"1764072000", "", "orders-push", "",
                                                "1764072030000"};

static void test_v2_worked_example(void)
{
    char sha[MSM_SIGNATURE_HEX_LEN + 1], text[512], hex[MSM_SIGNATURE_HEX_LEN + 1];
    CU_ASSERT_EQUAL(msm_signature_sha256_hex(EX_BODY, strlen(EX_BODY), sha), MSM_OK);
    CU_ASSERT_STRING_EQUAL(sha, "54985dc3c12fada7a1b1db53cf23d3cbd4bcbe64e1cef95071e2073e2ceff4ed");
    msm_signature_v2_text(&ex_single, sha, text, sizeof(text));
    CU_ASSERT_STRING_EQUAL(text, "v2\n1764072000\n0190a3e2-0000-7000-8000-000000000001\n"
                                 "orders-push\n3\n1764072030000\n"
                                 "54985dc3c12fada7a1b1db53cf23d3cbd4bcbe64e1cef95071e2073e2ceff4ed");
    CU_ASSERT_EQUAL(msm_signature_v2(EX_SECRET, &ex_single, sha, hex), MSM_OK);
    CU_ASSERT_STRING_EQUAL(hex, "5dfa2a0b8c2f8d1175734efe519e5f21d75e4f29a6300a1b4dccf204d29d978f");
    char header[MSM_SIGNATURE_HEADER_SIZE];
    CU_ASSERT_EQUAL(msm_signature_header(EX_SECRET, &ex_single, EX_BODY, strlen(EX_BODY), header,
                                         sizeof(header)),
                    MSM_OK);
    CU_ASSERT_STRING_EQUAL(header,
                           "t=1764072000,"
                           "v1=58f138e2672ccda94148e839c584595640ff39f3f6e758100973d4c1e66d4d7c,"
                           "v2=5dfa2a0b8c2f8d1175734efe519e5f21d75e4f29a6300a1b4dccf204d29d978f");

    /* The batch: ce-id and Msm-Attempt are empty lines. */
    CU_ASSERT_EQUAL(msm_signature_sha256_hex(EX_BATCH, strlen(EX_BATCH), sha), MSM_OK);
    CU_ASSERT_STRING_EQUAL(sha, "9d48121389b3da7453faf6425eb96befbd3293865477f1a47792971a14d114d6");
    msm_signature_v2_text(&ex_batch, sha, text, sizeof(text));
    CU_ASSERT_STRING_EQUAL(text, "v2\n1764072000\n\norders-push\n\n1764072030000\n"
                                 "9d48121389b3da7453faf6425eb96befbd3293865477f1a47792971a14d114d6");
    CU_ASSERT_EQUAL(msm_signature_header(EX_SECRET, &ex_batch, EX_BATCH, strlen(EX_BATCH), header,
                                         sizeof(header)),
                    MSM_OK);
    CU_ASSERT_STRING_EQUAL(header,
                           "t=1764072000,"
                           "v1=e11112f69779755b7edce8382f8e87b7c4596400ebc060280253ed8908d48896,"
                           "v2=e6979e38efb0c1a380f4212276bc88e41290d233b983be179f06fe71f9971009");
}

static void test_v2(void)
{
    expect_v2("s3cret", &ex_single, EX_BODY, strlen(EX_BODY));
    expect_v2("k", &ex_batch, "", 0);                              /* empty body */
    msm_signature_fields_t bin = {"1", "x", "s", "1", "2"};
    expect_v2("another key", &bin, "\0\1\2bin", 6);                 /* binary body */
    /* The empty body's hash is SHA-256 of nothing. */
    char sha[MSM_SIGNATURE_HEX_LEN + 1];
    CU_ASSERT_EQUAL(msm_signature_sha256_hex("", 0, sha), MSM_OK);
    CU_ASSERT_STRING_EQUAL(sha, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");

    /* Every field is signed: changing any one changes the signature. */
    char base[65], other[65];
    CU_ASSERT_EQUAL(msm_signature_sha256_hex("b", 1, sha), MSM_OK);
    msm_signature_fields_t f = {"123", "id", "sub", "1", "999"};
    CU_ASSERT_EQUAL(msm_signature_v2("k", &f, sha, base), MSM_OK);
    const char **fields[] = {&f.sf_t, &f.sf_id, &f.sf_subscription, &f.sf_attempt,
                             &f.sf_deadline};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        const char *saved = *fields[i];
        *fields[i] = "2";
        CU_ASSERT_EQUAL(msm_signature_v2("k", &f, sha, other), MSM_OK);
        CU_ASSERT_STRING_NOT_EQUAL(other, base);
        *fields[i] = saved;
    }
    CU_ASSERT_EQUAL(msm_signature_v2("k2", &f, sha, other), MSM_OK);
    CU_ASSERT_STRING_NOT_EQUAL(other, base);
    /* Moving text from one field to the next changes it too (the separators are signed). */
    msm_signature_fields_t shifted = {"123", "i", "dsub", "1", "999"};
    CU_ASSERT_EQUAL(msm_signature_v2("k", &shifted, sha, other), MSM_OK);
    CU_ASSERT_STRING_NOT_EQUAL(other, base);
    /* A line feed inside a field would make the text ambiguous: refused. */
    msm_signature_fields_t lf = {"123", "id\nsub", "x", "1", "999"};
    CU_ASSERT_EQUAL(msm_signature_v2("k", &lf, sha, other), MSM_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(other, "");
    CU_ASSERT_EQUAL(msm_signature_v2_text(&lf, sha, other, sizeof(other)), 0);
    /* The text is measured like snprintf when the buffer is short. */
    char small[8];
    size_t need = msm_signature_v2_text(&f, sha, small, sizeof(small));
    CU_ASSERT_EQUAL(need, strlen("v2\n123\nid\nsub\n1\n999\n") + 64);
    CU_ASSERT_STRING_EQUAL(small, "v2\n123\n");
    /* The header needs its room. */
    char tiny[100];
    CU_ASSERT_EQUAL(msm_signature_header("k", &f, "b", 1, tiny, sizeof(tiny)), MSM_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(tiny, "");
}

/* The header's v1 is still the v1 of before: t, the id and the body only. */
static void test_header_keeps_v1(void)
{
    char header[MSM_SIGNATURE_HEADER_SIZE], v1[MSM_SIGNATURE_HEX_LEN + 1], want[200];
    msm_signature_fields_t f = {"1700000000", "019b-evt", "sub", "2", "1700000004000"};
    CU_ASSERT_EQUAL(msm_signature_header("s3cret", &f, "{\"a\":1}", 7, header, sizeof(header)),
                    MSM_OK);
    CU_ASSERT_EQUAL(msm_signature_v1("s3cret", "1700000000", 10, "019b-evt", "{\"a\":1}", 7, v1),
                    MSM_OK);
    snprintf(want, sizeof(want), "t=1700000000,v1=%s,v2=", v1);
    CU_ASSERT_EQUAL(strncmp(header, want, strlen(want)), 0);
    CU_ASSERT_EQUAL(strlen(header), strlen(want) + 64);
    /* Changing only the attempt leaves v1 as it was and changes v2. */
    char header2[MSM_SIGNATURE_HEADER_SIZE];
    f.sf_attempt = "3";
    CU_ASSERT_EQUAL(msm_signature_header("s3cret", &f, "{\"a\":1}", 7, header2, sizeof(header2)),
                    MSM_OK);
    CU_ASSERT_EQUAL(strncmp(header2, want, strlen(want)), 0);
    CU_ASSERT_STRING_NOT_EQUAL(header2 + strlen(want), header + strlen(want));
}

static CU_TestInfo tests[] = {
    {"v1 is HMAC-SHA256 of <t>.<id>.<body>", test_v1},
    {"v2 text and HMAC, field by field", test_v2},
    {"v2: docs/push.md's worked example", test_v2_worked_example},
    {"the header: t, v1 as before, v2", test_header_keeps_v1},
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
