/* SPDX-License-Identifier: MIT */
/* The network address policy: CIDR list parsing and its errors, the default blocks, IPv4,
 * IPv6 and IPv4-mapped addresses, allow entries that must lie inside the block they open,
 * and deny entries that win over everything. */
#include "msm_test.h"
#include "msm/err.h"
#include "msm/netpolicy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

static char why[512];

static int check(const msm_netpolicy_t *p, const char *ip)
{
    why[0] = '\0';
    return msm_netpolicy_check_ip(p, ip, why, sizeof(why));
}

static msm_netpolicy_t *make(const char *allow, const char *deny)
{
    char err[256];
    msm_netpolicy_t *p = msm_netpolicy_new(allow, deny, err, sizeof(err));
    if (!p)
        fprintf(stderr, "msm_netpolicy_new(%s, %s): %s\n", allow ? allow : "-", deny ? deny : "-",
                err);
    return p;
}

static void expect_bad(const char *allow, const char *deny, const char *fragment)
{
    char err[256] = "";
    msm_netpolicy_t *p = msm_netpolicy_new(allow, deny, err, sizeof(err));
    CU_ASSERT_PTR_NULL(p);
    msm_netpolicy_free(p);
    if (!strstr(err, fragment)) {
        fprintf(stderr, "error for (%s, %s) was \"%s\", wanted \"%s\"\n", allow ? allow : "",
                deny ? deny : "", err, fragment);
        CU_FAIL("error text");
    }
}

static void test_parse(void)
{
    msm_netpolicy_t *p = make(NULL, NULL);
    CU_ASSERT_PTR_NOT_NULL(p);
    msm_netpolicy_free(p);
    p = make(" 10.0.0.0/8 ,, ::1, 192.168.1.7,fe80::/10,", "");
    CU_ASSERT_PTR_NOT_NULL(p);
    msm_netpolicy_free(p);
    expect_bad("10.0.0.0/33", NULL, "router.allow_networks: \"10.0.0.0/33\": the prefix length");
    expect_bad(NULL, "::/129", "router.deny_networks: \"::/129\"");
    expect_bad("10.0.0.0/", NULL, "prefix length");
    expect_bad("10.0.0.0/8x", NULL, "prefix length");
    expect_bad("10.0.0.0/-1", NULL, "prefix length");
    expect_bad("10.1.0.0/8", NULL, "host bits set (the block is 10.0.0.0/8)");
    expect_bad("fe80::1/10", NULL, "host bits set (the block is fe80::/10)");
    expect_bad("localhost", NULL, "not an IP address");
    expect_bad("10.0.0", NULL, "not an IP address");
    expect_bad("010.0.0.1", NULL, "not an IP address");
    expect_bad("/8", NULL, "not an IP address");
    expect_bad("fe80::1%eth0", NULL, "not an IP address");
    expect_bad("10.0.0.0/8,300.0.0.1", NULL, "\"300.0.0.1\"");
}

static void test_defaults(void)
{
    msm_netpolicy_t *p = make(NULL, NULL);
    /* Public addresses are allowed. */
    CU_ASSERT_EQUAL(check(p, "93.184.216.34"), MSM_OK);
    CU_ASSERT_EQUAL(check(p, "2606:2800:220:1:248:1893:25c8:1946"), MSM_OK);
    CU_ASSERT_EQUAL(check(p, "172.32.0.1"), MSM_OK); /* just past 172.16/12 */
    CU_ASSERT_EQUAL(check(p, "11.0.0.1"), MSM_OK);
    /* Everything else needs an allow entry. */
    const char *denied[] = {"169.254.169.254", "169.254.1.1",
                            "100.100.100.200", "fe80::1",
                            "fd00:ec2::254",   "127.0.0.1",
                            "127.255.255.254", "::1",
                            "10.1.2.3",        "172.16.0.1",
                            "172.31.255.255",  "192.168.0.1",
                            "100.64.0.1",      "fc00::1",
                            "fdff::1",         "0.0.0.0",
                            "0.1.2.3",         "::",
                            "224.0.0.1",       "239.1.1.1",
                            "ff02::1",         "255.255.255.255",
                            "240.0.0.1"};
    for (size_t i = 0; i < sizeof(denied) / sizeof(denied[0]); i++) {
        if (check(p, denied[i]) != MSM_ERR_DENIED) {
            fprintf(stderr, "%s was not denied\n", denied[i]);
            CU_FAIL("denied by default");
        }
    }
    CU_ASSERT_EQUAL(check(p, "169.254.169.254"), MSM_ERR_DENIED);
    CU_ASSERT_STRING_EQUAL(why, "address 169.254.169.254 is denied (link-local / cloud "
                                "metadata); allow it in router.allow_networks");
    CU_ASSERT_EQUAL(check(p, "10.1.2.3"), MSM_ERR_DENIED);
    CU_ASSERT_STRING_EQUAL(why, "address 10.1.2.3 is denied (private network); allow it in "
                                "router.allow_networks");
    CU_ASSERT_EQUAL(check(p, "::1"), MSM_ERR_DENIED);
    CU_ASSERT_STRING_EQUAL(why, "address ::1 is denied (loopback); allow it in "
                                "router.allow_networks");
    CU_ASSERT_EQUAL(check(p, "not-an-ip"), MSM_ERR_INVALID);
    msm_netpolicy_free(p);
}

static void test_allow(void)
{
    msm_netpolicy_t *p = make("127.0.0.0/8,::1,10.1.0.0/16,fc00::/7,169.254.0.0/16", NULL);
    CU_ASSERT_EQUAL(check(p, "127.0.0.1"), MSM_OK);
    CU_ASSERT_EQUAL(check(p, "127.0.0.2"), MSM_OK);
    CU_ASSERT_EQUAL(check(p, "::1"), MSM_OK);
    CU_ASSERT_EQUAL(check(p, "10.1.2.3"), MSM_OK);
    CU_ASSERT_EQUAL(check(p, "10.2.0.1"), MSM_ERR_DENIED);
    CU_ASSERT_EQUAL(check(p, "fd12::1"), MSM_OK);
    CU_ASSERT_EQUAL(check(p, "169.254.1.1"), MSM_OK);
    /* A metadata address is its own block: opening its neighbourhood does not open it. */
    CU_ASSERT_EQUAL(check(p, "169.254.169.254"), MSM_ERR_DENIED);
    CU_ASSERT_EQUAL(check(p, "fd00:ec2::254"), MSM_ERR_DENIED);
    CU_ASSERT_EQUAL(check(p, "93.184.216.34"), MSM_OK);
    msm_netpolicy_free(p);

    /* Only when named exactly (or a block inside it). */
    p = make("169.254.169.254/32,fd00:ec2::254", NULL);
    CU_ASSERT_EQUAL(check(p, "169.254.169.254"), MSM_OK);
    CU_ASSERT_EQUAL(check(p, "fd00:ec2::254"), MSM_OK);
    CU_ASSERT_EQUAL(check(p, "169.254.169.253"), MSM_ERR_DENIED);
    msm_netpolicy_free(p);

    /* A broad entry opens none of the default blocks. */
    p = make("0.0.0.0/0,::/0", NULL);
    CU_ASSERT_EQUAL(check(p, "127.0.0.1"), MSM_ERR_DENIED);
    CU_ASSERT_EQUAL(check(p, "10.0.0.1"), MSM_ERR_DENIED);
    CU_ASSERT_EQUAL(check(p, "169.254.169.254"), MSM_ERR_DENIED);
    CU_ASSERT_EQUAL(check(p, "::1"), MSM_ERR_DENIED);
    CU_ASSERT_EQUAL(check(p, "8.8.8.8"), MSM_OK);
    msm_netpolicy_free(p);

    /* One host of the loopback block. */
    p = make("127.0.0.1/32", NULL);
    CU_ASSERT_EQUAL(check(p, "127.0.0.1"), MSM_OK);
    CU_ASSERT_EQUAL(check(p, "127.0.0.2"), MSM_ERR_DENIED);
    msm_netpolicy_free(p);
}

static void test_deny_wins(void)
{
    msm_netpolicy_t *p = make("10.0.0.0/8,127.0.0.0/8", "10.9.0.0/16,8.8.8.0/24,2001:db8::/32");
    CU_ASSERT_EQUAL(check(p, "10.1.0.1"), MSM_OK);
    CU_ASSERT_EQUAL(check(p, "10.9.1.1"), MSM_ERR_DENIED);
    CU_ASSERT_STRING_EQUAL(why, "address 10.9.1.1 is denied by router.deny_networks "
                                "(10.9.0.0/16)");
    CU_ASSERT_EQUAL(check(p, "8.8.8.8"), MSM_ERR_DENIED);
    CU_ASSERT_EQUAL(check(p, "8.8.4.4"), MSM_OK);
    CU_ASSERT_EQUAL(check(p, "2001:db8::1"), MSM_ERR_DENIED);
    CU_ASSERT_EQUAL(check(p, "::ffff:8.8.8.8"), MSM_ERR_DENIED);
    msm_netpolicy_free(p);
    /* The same block in both lists: denied. */
    p = make("127.0.0.1", "127.0.0.1");
    CU_ASSERT_EQUAL(check(p, "127.0.0.1"), MSM_ERR_DENIED);
    msm_netpolicy_free(p);
}

static void test_mapped(void)
{
    msm_netpolicy_t *p = make("::ffff:10.0.0.0/104", NULL);
    /* Mapped addresses are judged as IPv4, by IPv4 entries and defaults. */
    CU_ASSERT_EQUAL(check(p, "::ffff:169.254.169.254"), MSM_ERR_DENIED);
    CU_ASSERT_STRING_EQUAL(why, "address 169.254.169.254 is denied (link-local / cloud "
                                "metadata); allow it in router.allow_networks");
    CU_ASSERT_EQUAL(check(p, "::ffff:127.0.0.1"), MSM_ERR_DENIED);
    CU_ASSERT_EQUAL(check(p, "::ffff:8.8.8.8"), MSM_OK);
    /* A mapped entry is the IPv4 entry. */
    CU_ASSERT_EQUAL(check(p, "10.3.2.1"), MSM_OK);
    CU_ASSERT_EQUAL(check(p, "::ffff:10.3.2.1"), MSM_OK);
    msm_netpolicy_free(p);
    p = make("127.0.0.0/8", NULL);
    CU_ASSERT_EQUAL(check(p, "::ffff:127.0.0.1"), MSM_OK);
    CU_ASSERT_EQUAL(check(p, "::ffff:7f00:1"), MSM_OK);
    msm_netpolicy_free(p);
}

static void test_sockaddr_and_host(void)
{
    msm_netpolicy_t *p = make("127.0.0.1/32", NULL);
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons(80)};
    inet_pton(AF_INET, "127.0.0.1", &in.sin_addr);
    CU_ASSERT_EQUAL(msm_netpolicy_check_sockaddr(p, (struct sockaddr *)&in, why, sizeof(why)),
                    MSM_OK);
    inet_pton(AF_INET, "127.0.0.2", &in.sin_addr);
    CU_ASSERT_EQUAL(msm_netpolicy_check_sockaddr(p, (struct sockaddr *)&in, why, sizeof(why)),
                    MSM_ERR_DENIED);
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "::ffff:127.0.0.1", &in6.sin6_addr);
    CU_ASSERT_EQUAL(msm_netpolicy_check_sockaddr(p, (struct sockaddr *)&in6, why, sizeof(why)),
                    MSM_OK);
    inet_pton(AF_INET6, "fe80::1", &in6.sin6_addr);
    CU_ASSERT_EQUAL(msm_netpolicy_check_sockaddr(p, (struct sockaddr *)&in6, why, sizeof(why)),
                    MSM_ERR_DENIED);
    struct sockaddr un = {.sa_family = AF_UNIX};
    CU_ASSERT_EQUAL(msm_netpolicy_check_sockaddr(p, &un, why, sizeof(why)), MSM_ERR_INVALID);

    /* Literals need no resolver; odd numeric forms resolve to what they mean. */
    CU_ASSERT_EQUAL(msm_netpolicy_check_host(p, "127.0.0.1", why, sizeof(why)), MSM_OK);
    CU_ASSERT_EQUAL(msm_netpolicy_check_host(p, "169.254.169.254", why, sizeof(why)),
                    MSM_ERR_DENIED);
    CU_ASSERT_EQUAL(msm_netpolicy_check_host(p, "2852039166", why, sizeof(why)),
                    MSM_ERR_DENIED); /* 169.254.169.254 as one number */
    CU_ASSERT_EQUAL(msm_netpolicy_check_host(p, "no-such-host.invalid", why, sizeof(why)),
                    MSM_ERR_NOTFOUND);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "cannot resolve no-such-host.invalid"));

    msm_netpolicy_t *c = msm_netpolicy_dup(p);
    CU_ASSERT_PTR_NOT_NULL(c);
    CU_ASSERT_EQUAL(check(c, "127.0.0.1"), MSM_OK);
    CU_ASSERT_EQUAL(check(c, "127.0.0.2"), MSM_ERR_DENIED);
    msm_netpolicy_free(c);
    msm_netpolicy_free(p);
    msm_netpolicy_free(NULL);
}

static CU_TestInfo tests[] = {
    {"CIDR lists and their errors", test_parse},
    {"defaults: public allowed, special blocks denied", test_defaults},
    {"allow entries open the block they lie in", test_allow},
    {"deny wins", test_deny_wins},
    {"IPv4-mapped IPv6 is judged as IPv4", test_mapped},
    {"socket addresses and hosts", test_sockaddr_and_host},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"netpolicy", NULL, NULL, NULL, NULL, tests},
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return msm_test_run(suites);
}
