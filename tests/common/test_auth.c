/* SPDX-License-Identifier: MIT */
/* Principals (msm/auth.h): the token file and its errors, tokens found by their SHA-256,
 * '*' patterns, scopes (admin holds all; kinds with and without a resource), and the
 * publish quota's bucket. */
#include "msm_test.h"
#include "msm/auth.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char path[256];

static void sha_hex(const char *s, char out[65])
{
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)s, strlen(s), d);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/* Writes @p text to the test's file and loads it. */
static msm_auth_t *load(const char *text, char *err, size_t n)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return NULL;
    fputs(text, f);
    fclose(f);
    return msm_auth_load(path, err, n);
}

static void test_glob(void)
{
    CU_ASSERT_TRUE(msm_auth_glob("orders*", "orders"));
    CU_ASSERT_TRUE(msm_auth_glob("orders*", "orders-eu"));
    CU_ASSERT_FALSE(msm_auth_glob("orders*", "payments"));
    CU_ASSERT_FALSE(msm_auth_glob("orders", "orders-eu"));
    CU_ASSERT_TRUE(msm_auth_glob("*", "anything"));
    CU_ASSERT_TRUE(msm_auth_glob("*-eu", "orders-eu"));
    CU_ASSERT_TRUE(msm_auth_glob("a*b*c", "aXXbYYc"));
    CU_ASSERT_FALSE(msm_auth_glob("a*b*c", "aXXbYY"));
    CU_ASSERT_TRUE(msm_auth_scope_valid("publish:orders*"));
    CU_ASSERT_TRUE(msm_auth_scope_valid("admin"));
    CU_ASSERT_FALSE(msm_auth_scope_valid("publish:"));
    CU_ASSERT_FALSE(msm_auth_scope_valid("publish"));
    CU_ASSERT_FALSE(msm_auth_scope_valid("root"));
}

static void test_tokens_and_scopes(void)
{
    char a[65], b[65], file[1024], err[256];
    sha_hex("tok-a", a);
    sha_hex("tok-b", b);
    snprintf(file, sizeof(file),
             "[{\"name\":\"a\",\"token_sha256\":\"%s\",\"scopes\":[\"publish:orders*\","
             "\"subscribe:orders-*\"]},"
             "{\"name\":\"b\",\"token_sha256\":\"%s\",\"scopes\":[\"admin\"]}]",
             a, b);
    msm_auth_t *auth = load(file, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(auth);
    CU_ASSERT_EQUAL(msm_auth_count(auth), 2);
    msm_principal_t *pa = msm_auth_by_token(auth, "tok-a", 5);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pa);
    CU_ASSERT_STRING_EQUAL(msm_principal_name(pa), "a");
    CU_ASSERT_PTR_NULL(msm_auth_by_token(auth, "tok-", 4));
    CU_ASSERT_PTR_NULL(msm_auth_by_token(auth, "tok-ab", 6));
    CU_ASSERT_PTR_EQUAL(msm_auth_by_name(auth, "b"), msm_auth_by_token(auth, "tok-b", 5));
    CU_ASSERT_TRUE(msm_principal_can(pa, "publish", "orders"));
    CU_ASSERT_FALSE(msm_principal_can(pa, "publish", "payments"));
    CU_ASSERT_TRUE(msm_principal_can(pa, "publish", NULL)); /* some topic */
    CU_ASSERT_TRUE(msm_principal_can(pa, "subscribe", "orders-billing"));
    CU_ASSERT_FALSE(msm_principal_can(pa, "subscribe", "orders"));
    CU_ASSERT_FALSE(msm_principal_can(pa, "schemas", NULL));
    CU_ASSERT_FALSE(msm_principal_can(pa, "admin", NULL));
    /* a kind must match whole: "pub" is not "publish" */
    CU_ASSERT_FALSE(msm_principal_can(pa, "pub", "orders"));
    msm_principal_t *pb = msm_auth_by_name(auth, "b");
    CU_ASSERT_TRUE(msm_principal_can(pb, "schemas", NULL));
    CU_ASSERT_TRUE(msm_principal_can(pb, "replay", "x"));
    /* no quota: always taken */
    CU_ASSERT_EQUAL(msm_principal_take(pa, 1000000, 1), 0);
    msm_auth_free(auth);
}

static void test_quota(void)
{
    char a[65], file[512], err[256];
    sha_hex("q", a);
    snprintf(file, sizeof(file),
             "[{\"name\":\"q\",\"token_sha256\":\"%s\",\"scopes\":[],\"publish_per_s\":100}]", a);
    msm_auth_t *auth = load(file, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(auth);
    msm_principal_t *p = msm_auth_by_name(auth, "q");
    uint64_t t = 1000;
    /* a second's worth up front */
    CU_ASSERT_EQUAL(msm_principal_take(p, 60, t), 0);
    CU_ASSERT_EQUAL(msm_principal_take(p, 60, t), 0); /* overdraws: 40 left, 60 asked */
    int64_t wait = msm_principal_take(p, 1, t);
    CU_ASSERT_TRUE(wait > 0 && wait <= 210); /* 20 owed + 1 at 100/s */
    CU_ASSERT_TRUE(msm_principal_take(p, 1, t + 100) > 0);
    CU_ASSERT_EQUAL(msm_principal_take(p, 1, t + 220), 0);
    /* over 10 s at most 100/s (plus the first second and one batch) get through */
    uint64_t taken = 0;
    for (uint64_t now = t + 220; now < t + 10220; now += 5)
        if (msm_principal_take(p, 10, now) == 0)
            taken += 10;
    CU_ASSERT_TRUE(taken >= 950 && taken <= 1000 + 100 + 10);
    msm_auth_free(auth);
}

static void test_bad_files(void)
{
    char a[65], file[512], err[256];
    sha_hex("x", a);
    const char *bad[] = {
        "{}",
        "[1]",
        "[{\"name\":\"\",\"token_sha256\":\"%s\",\"scopes\":[]}]",
        "[{\"name\":\"n\",\"token_sha256\":\"abc\",\"scopes\":[]}]",
        "[{\"name\":\"n\",\"token_sha256\":\"%s\",\"scopes\":[\"root\"]}]",
        "[{\"name\":\"n\",\"token_sha256\":\"%s\",\"scopes\":\"admin\"}]",
        "[{\"name\":\"n\",\"token_sha256\":\"%s\",\"scopes\":[],\"publish_per_s\":0}]",
        "[{\"name\":\"n\",\"token_sha256\":\"%s\",\"scopes\":[],\"token\":\"plain\"}]",
        "[{\"name\":\"n\",\"token_sha256\":\"%s\",\"scopes\":[]},"
        "{\"name\":\"n\",\"token_sha256\":\"%s\",\"scopes\":[]}]",
        "not json",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(file, sizeof(file), bad[i], a, a);
        err[0] = '\0';
        msm_auth_t *auth = load(file, err, sizeof(err));
        CU_ASSERT_PTR_NULL(auth);
        CU_ASSERT_TRUE(err[0] != '\0');
        msm_auth_free(auth);
    }
    CU_ASSERT_PTR_NULL(msm_auth_load("/nonexistent/tokens.json", err, sizeof(err)));
}

static int suite_init(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(path, sizeof(path), "%s/msm-test-auth-%d.json", tmp && *tmp ? tmp : "/tmp",
             (int)getpid());
    return 0;
}

static int suite_clean(void)
{
    unlink(path);
    return 0;
}

static CU_TestInfo tests[] = {
    {"'*' patterns and scope names", test_glob},
    {"tokens by digest, scopes", test_tokens_and_scopes},
    {"publish_per_s bucket", test_quota},
    {"bad token files are refused", test_bad_files},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"auth", suite_init, suite_clean, NULL, NULL, tests},
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return msm_test_run(suites);
}
