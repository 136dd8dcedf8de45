/* SPDX-License-Identifier: MIT */
/* Network address policy (msm/netpolicy.h): CIDR lists parsed once, and the judgement of
 * one address against the deny list, the default blocks and the allow list. */
#include "msm/netpolicy.h"
#include "msm/err.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An address or a block. IPv4 in n_a[0..3] (n_v4 set), IPv6 in all 16 bytes. */
typedef struct {
    uint8_t n_a[16];
    unsigned n_bits;
    int n_v4;
} net_t;

struct msm_netpolicy_s {
    net_t *np_allow, *np_deny;
    size_t np_nallow, np_ndeny;
};

/* ---- the default blocks ---- */

#define WHAT_META "link-local / cloud metadata"

typedef struct {
    net_t b_net;
    const char *b_what;
} block_t;

static const block_t blocks[] = {
    {{{169, 254}, 16, 1}, WHAT_META},
    {{{169, 254, 169, 254}, 32, 1}, WHAT_META},
    {{{100, 100, 100, 200}, 32, 1}, WHAT_META},
    {{{0xfe, 0x80}, 10, 0}, WHAT_META},
    {{{0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x54}, 128, 0}, WHAT_META},
    {{{127}, 8, 1}, "loopback"},
    {{{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 128, 0}, "loopback"},
    {{{10}, 8, 1}, "private network"},
    {{{172, 16}, 12, 1}, "private network"},
    {{{192, 168}, 16, 1}, "private network"},
    {{{100, 64}, 10, 1}, "private network"},
    {{{0xfc}, 7, 0}, "private network"},
    {{{0xfe, 0xc0}, 10, 0}, "private network"},
    {{{0}, 8, 1}, "unspecified address"},
    {{{0}, 128, 0}, "unspecified address"},
    {{{224}, 4, 1}, "multicast"},
    {{{0xff}, 8, 0}, "multicast"},
    {{{240}, 4, 1}, "broadcast / reserved"},
};

/* ---- addresses ---- */

static const uint8_t mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* An IPv6 address into @p out, judged as IPv4 when it is IPv4-mapped. */
static void from_v6(const uint8_t a[16], net_t *out)
{
    memset(out, 0, sizeof(*out));
    if (memcmp(a, mapped_prefix, sizeof(mapped_prefix)) == 0) {
        memcpy(out->n_a, a + 12, 4);
        out->n_bits = 32;
        out->n_v4 = 1;
    } else {
        memcpy(out->n_a, a, 16);
        out->n_bits = 128;
    }
}

static int parse_addr(const char *s, net_t *out)
{
    uint8_t a[16];
    memset(out, 0, sizeof(*out));
    if (strchr(s, ':')) {
        if (inet_pton(AF_INET6, s, a) != 1)
            return MSM_ERR_INVALID;
        from_v6(a, out);
        return MSM_OK;
    }
    if (inet_pton(AF_INET, s, out->n_a) != 1)
        return MSM_ERR_INVALID;
    out->n_bits = 32;
    out->n_v4 = 1;
    return MSM_OK;
}

static int contains(const net_t *block, const net_t *addr)
{
    if (block->n_v4 != addr->n_v4)
        return 0;
    unsigned full = block->n_bits / 8, rest = block->n_bits % 8;
    if (memcmp(block->n_a, addr->n_a, full) != 0)
        return 0;
    if (rest == 0)
        return 1;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (block->n_a[full] & mask) == (addr->n_a[full] & mask);
}

static void format_addr(const net_t *n, char *buf, size_t size)
{
    char text[INET6_ADDRSTRLEN];
    if (!inet_ntop(n->n_v4 ? AF_INET : AF_INET6, n->n_a, text, sizeof(text)))
        snprintf(text, sizeof(text), "?");
    snprintf(buf, size, "%s", text);
}

/* ---- parsing ---- */

/* One CIDR entry (NUL-terminated, trimmed) into @p out. */
static int parse_cidr(const char *entry, net_t *out, char *why, size_t why_size)
{
    char addr[INET6_ADDRSTRLEN + 8];
    const char *slash = strchr(entry, '/');
    size_t alen = slash ? (size_t)(slash - entry) : strlen(entry);
    if (alen == 0 || alen >= sizeof(addr)) {
        snprintf(why, why_size, "not an IP address");
        return MSM_ERR_INVALID;
    }
    memcpy(addr, entry, alen);
    addr[alen] = '\0';
    if (parse_addr(addr, out) != MSM_OK) {
        snprintf(why, why_size, "not an IP address");
        return MSM_ERR_INVALID;
    }
    int was_v6 = strchr(addr, ':') != NULL;
    unsigned max = was_v6 ? 128 : 32;
    unsigned bits = max;
    if (slash) {
        const char *p = slash + 1;
        size_t digits = strspn(p, "0123456789");
        if (digits == 0 || digits > 3 || p[digits] != '\0' || (bits = (unsigned)atoi(p)) > max) {
            snprintf(why, why_size, "the prefix length must be 0..%u", max);
            return MSM_ERR_INVALID;
        }
    }
    if (was_v6 && out->n_v4) {
        /* ::ffff:a.b.c.d/N: the IPv4 block a.b.c.d/(N-96) when it lies in the mapped range;
         * a shorter prefix stays an IPv6 block (which never holds a mapped address). */
        if (bits >= 96) {
            bits -= 96;
        } else {
            uint8_t a[16];
            memcpy(a, mapped_prefix, sizeof(mapped_prefix));
            memcpy(a + 12, out->n_a, 4);
            memcpy(out->n_a, a, 16);
            out->n_v4 = 0;
        }
    }
    net_t masked = *out;
    masked.n_bits = bits;
    for (unsigned i = 0; i < (out->n_v4 ? 4u : 16u); i++) {
        unsigned from = i * 8;
        if (from >= bits)
            masked.n_a[i] = 0;
        else if (bits - from < 8)
            masked.n_a[i] &= (uint8_t)(0xff << (8 - (bits - from)));
    }
    if (memcmp(masked.n_a, out->n_a, sizeof(masked.n_a)) != 0) {
        char base[INET6_ADDRSTRLEN];
        format_addr(&masked, base, sizeof(base));
        snprintf(why, why_size, "host bits set (the block is %s/%u)", base, bits);
        return MSM_ERR_INVALID;
    }
    *out = masked;
    return MSM_OK;
}

/* A comma-separated list into a new array. */
static int parse_list(const char *setting,
                      const char *list,
                      net_t **out,
                      size_t *nout,
                      char *errbuf,
                      size_t errbuf_size)
{
    *out = NULL;
    *nout = 0;
    if (!list || !*list)
        return MSM_OK;
    size_t cap = 1;
    for (const char *p = list; *p; p++)
        cap += *p == ',';
    net_t *nets = calloc(cap, sizeof(*nets));
    if (!nets) {
        snprintf(errbuf, errbuf_size, "out of memory");
        return MSM_ERR_NOMEM;
    }
    size_t n = 0;
    const char *p = list;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len && (*p == ' ' || *p == '\t')) {
            p++;
            len--;
        }
        while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (len) {
            char entry[128], why[160];
            int rc = MSM_ERR_INVALID;
            if (len < sizeof(entry)) {
                memcpy(entry, p, len);
                entry[len] = '\0';
                rc = parse_cidr(entry, &nets[n], why, sizeof(why));
            } else {
                snprintf(why, sizeof(why), "too long");
            }
            if (rc != MSM_OK) {
                snprintf(errbuf, errbuf_size, "%s: \"%.*s\": %s", setting,
                         (int)(len > 64 ? 64 : len), p, why);
                free(nets);
                return rc;
            }
            n++;
        }
        if (!end)
            break;
        p = end + 1;
    }
    *out = nets;
    *nout = n;
    return MSM_OK;
}

msm_netpolicy_t *
msm_netpolicy_new(const char *allow, const char *deny, char *errbuf, size_t errbuf_size)
{
    msm_netpolicy_t *p = calloc(1, sizeof(*p));
    if (!p) {
        snprintf(errbuf, errbuf_size, "out of memory");
        return NULL;
    }
    if (parse_list(MSM_NETPOLICY_ALLOW_SETTING, allow, &p->np_allow, &p->np_nallow, errbuf,
                   errbuf_size) != MSM_OK ||
        parse_list(MSM_NETPOLICY_DENY_SETTING, deny, &p->np_deny, &p->np_ndeny, errbuf,
                   errbuf_size) != MSM_OK) {
        msm_netpolicy_free(p);
        return NULL;
    }
    return p;
}

static net_t *dup_nets(const net_t *nets, size_t n)
{
    net_t *copy = malloc((n ? n : 1) * sizeof(*copy));
    if (copy && n)
        memcpy(copy, nets, n * sizeof(*copy));
    return copy;
}

msm_netpolicy_t *msm_netpolicy_dup(const msm_netpolicy_t *p)
{
    if (!p)
        return NULL;
    msm_netpolicy_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->np_allow = dup_nets(p->np_allow, p->np_nallow);
    c->np_deny = dup_nets(p->np_deny, p->np_ndeny);
    c->np_nallow = p->np_nallow;
    c->np_ndeny = p->np_ndeny;
    if (!c->np_allow || !c->np_deny) {
        msm_netpolicy_free(c);
        return NULL;
    }
    return c;
}

void msm_netpolicy_free(msm_netpolicy_t *p)
{
    if (!p)
        return;
    free(p->np_allow);
    free(p->np_deny);
    free(p);
}

/* ---- judging ---- */

static int judge(const msm_netpolicy_t *p, const net_t *addr, char *why, size_t why_size)
{
    char text[INET6_ADDRSTRLEN];
    for (size_t i = 0; i < p->np_ndeny; i++) {
        if (contains(&p->np_deny[i], addr)) {
            char block[INET6_ADDRSTRLEN];
            format_addr(addr, text, sizeof(text));
            format_addr(&p->np_deny[i], block, sizeof(block));
            snprintf(why, why_size, "address %s is denied by %s (%s/%u)", text,
                     MSM_NETPOLICY_DENY_SETTING, block, p->np_deny[i].n_bits);
            return MSM_ERR_DENIED;
        }
    }
    const block_t *in = NULL;
    for (size_t i = 0; i < sizeof(blocks) / sizeof(blocks[0]); i++) {
        if (contains(&blocks[i].b_net, addr) && (!in || blocks[i].b_net.n_bits > in->b_net.n_bits))
            in = &blocks[i];
    }
    if (!in)
        return MSM_OK;
    for (size_t i = 0; i < p->np_nallow; i++) {
        if (p->np_allow[i].n_bits >= in->b_net.n_bits && contains(&p->np_allow[i], addr))
            return MSM_OK;
    }
    format_addr(addr, text, sizeof(text));
    snprintf(why, why_size, "address %s is denied (%s); allow it in %s", text, in->b_what,
             MSM_NETPOLICY_ALLOW_SETTING);
    return MSM_ERR_DENIED;
}

int msm_netpolicy_check_sockaddr(const msm_netpolicy_t *p,
                                 const struct sockaddr *sa,
                                 char *why,
                                 size_t why_size)
{
    net_t addr;
    memset(&addr, 0, sizeof(addr));
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        memcpy(addr.n_a, &in->sin_addr, 4);
        addr.n_bits = 32;
        addr.n_v4 = 1;
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        from_v6(in6->sin6_addr.s6_addr, &addr);
    } else {
        snprintf(why, why_size, "address family %d is not IP", (int)sa->sa_family);
        return MSM_ERR_INVALID;
    }
    return judge(p, &addr, why, why_size);
}

int msm_netpolicy_check_ip(const msm_netpolicy_t *p, const char *ip, char *why, size_t why_size)
{
    net_t addr;
    if (parse_addr(ip, &addr) != MSM_OK) {
        snprintf(why, why_size, "%s is not an IP address", ip);
        return MSM_ERR_INVALID;
    }
    return judge(p, &addr, why, why_size);
}

int msm_netpolicy_check_host(const msm_netpolicy_t *p, const char *host, char *why, size_t why_size)
{
    int rc = msm_netpolicy_check_ip(p, host, why, why_size);
    if (rc != MSM_ERR_INVALID)
        return rc;
    /* Every address the name has, not only those this machine could use (no
     * AI_ADDRCONFIG): another router may reach the ones this one cannot. */
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(host, NULL, &hints, &res);
    if (gai != 0) {
        snprintf(why, why_size, "cannot resolve %s: %s", host, gai_strerror(gai));
        return MSM_ERR_NOTFOUND;
    }
    rc = MSM_ERR_NOTFOUND;
    snprintf(why, why_size, "cannot resolve %s: no IP address", host);
    for (const struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
            continue;
        if ((rc = msm_netpolicy_check_sockaddr(p, ai->ai_addr, why, why_size)) != MSM_OK)
            break;
    }
    freeaddrinfo(res);
    return rc;
}
