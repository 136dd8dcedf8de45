/* SPDX-License-Identifier: MIT */
/* Which network addresses msm may connect to (issue "safe endpoints"): an allow list and a
 * deny list of CIDR blocks on top of fixed defaults, so a subscription cannot make the
 * router push to cloud metadata, link-local, loopback or private addresses it was not
 * meant to reach. The frontend judges endpoint URLs at PUT, the router's HTTP client every
 * address it is about to connect to (router/README.md "Safe endpoints").
 *
 * The decision for one address, first match wins:
 *   1. inside a deny entry                                  -> denied
 *   2. a public address (none of the blocks below)          -> allowed
 *   3. inside an allow entry that lies within the address's default block (the most
 *      specific of the blocks below that holds it)          -> allowed
 *   4. otherwise                                            -> denied
 * Default blocks: link-local 169.254.0.0/16, fe80::/10; cloud metadata 169.254.169.254,
 * fd00:ec2::254, 100.100.100.200 (each its own /32 or /128: allowing 169.254.0.0/16 does
 * not open 169.254.169.254); loopback 127.0.0.0/8, ::1; private 10.0.0.0/8,
 * 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, fc00::/7, fec0::/10; unspecified
 * 0.0.0.0/8, ::; multicast 224.0.0.0/4, ff00::/8; broadcast and reserved 240.0.0.0/4.
 * Rule 3 means a broad entry such as 0.0.0.0/0 opens none of them: each must be named.
 * An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is judged as the IPv4 address, and a
 * mapped entry (::ffff:10.0.0.0/104) as the IPv4 entry.
 *
 * Threading: a policy is immutable once made; every function may be called from any
 * thread. */
#ifndef MSM_NETPOLICY_H
#define MSM_NETPOLICY_H

#include <stddef.h>
#include <sys/socket.h>

/** The settings the lists come from (the same names in the frontend and the router). */
#define MSM_NETPOLICY_ALLOW_SETTING "router.allow_networks"
#define MSM_NETPOLICY_DENY_SETTING  "router.deny_networks"

typedef struct msm_netpolicy_s msm_netpolicy_t;

/**
 * @brief Makes a policy from two comma-separated CIDR lists ("10.0.0.0/8, ::1"; an
 * address without a prefix is one host; blanks around entries and empty entries are
 * ignored).
 * @param allow the allow list, NULL or "" = none
 * @param deny the deny list, NULL or "" = none
 * @param errbuf receives the reason on failure, naming the setting and the entry (a bad
 *        address, a prefix out of range, or host bits set: "10.1.0.0/8")
 * @returns the policy (free with msm_netpolicy_free()), or NULL on failure.
 */
msm_netpolicy_t *
msm_netpolicy_new(const char *allow, const char *deny, char *errbuf, size_t errbuf_size);

/** @brief A copy of @p p (NULL when out of memory or @p p is NULL). */
msm_netpolicy_t *msm_netpolicy_dup(const msm_netpolicy_t *p);

/** @brief Frees @p p. Safe with NULL. */
void msm_netpolicy_free(msm_netpolicy_t *p);

/**
 * @brief Judges the address of @p sa (AF_INET or AF_INET6; the port is ignored).
 * @param why on MSM_ERR_DENIED receives one line for the user, e.g. "address
 *        169.254.169.254 is denied (link-local / cloud metadata); allow it in
 *        router.allow_networks"
 * @returns MSM_OK, MSM_ERR_DENIED, or MSM_ERR_INVALID (another family).
 */
int msm_netpolicy_check_sockaddr(const msm_netpolicy_t *p,
                                 const struct sockaddr *sa,
                                 char *why,
                                 size_t why_size);

/**
 * @brief Judges an IP literal ("10.0.0.1", "::1"; no brackets, no zone).
 * @returns MSM_OK, MSM_ERR_DENIED (reason in @p why), or MSM_ERR_INVALID when @p ip is not
 * an IP literal.
 */
int msm_netpolicy_check_ip(const msm_netpolicy_t *p, const char *ip, char *why, size_t why_size);

/**
 * @brief Judges a host: an IP literal directly, a name by every address it resolves to
 * (getaddrinfo: this blocks for as long as the system resolver takes, so call it off the
 * loop's thread). All must be allowed.
 * @returns MSM_OK, MSM_ERR_DENIED (the first denied address in @p why), or
 * MSM_ERR_NOTFOUND when the name does not resolve (the resolver's reason in @p why).
 */
int msm_netpolicy_check_host(const msm_netpolicy_t *p,
                             const char *host,
                             char *why,
                             size_t why_size);

#endif
