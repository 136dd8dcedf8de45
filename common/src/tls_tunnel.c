/* SPDX-License-Identifier: MIT */
/* A TLS client tunnel (tls_tunnel_int.h). The thread polls the listening socket, a wake
 * pipe and both sides of every connection; each direction holds at most one buffer of
 * bytes in transit, so a slow side stops reading the other (no unbounded queue). The TCP
 * connect and the handshake of a new connection block the thread up to the timeout: a
 * tunnel serves one client's few connections, and its reconnects are rare. */
#include "tls_tunnel_int.h"
#include "msm/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define FAC        "tls"
#define MAX_PAIRS  64
#define CHUNK      16384

/* One client connection and its TLS connection to the server. */
typedef struct {
    int local, remote;
    gnutls_session_t tls;
    uint8_t up[CHUNK]; /* read from the client, not yet sent over TLS */
    size_t up_len, up_off;
    uint8_t down[CHUNK]; /* received over TLS, not yet written to the client */
    size_t down_len, down_off;
} pair_t;

struct msm_tls_tunnel_s {
    char host[256];
    char port[8];
    char name[64];
    uint32_t timeout_ms;
    gnutls_certificate_credentials_t cred;
    char dir[128];
    char path[160];
    int listen_fd;
    int wake[2];
    pthread_t thread;
    int started;
    atomic_int stop;
    atomic_uint_fast64_t handshakes;
    pair_t *pairs[MAX_PAIRS];
    size_t npairs;
    int failing; /* the last connection failed: log the next failure only at debug */
};

static int nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void report(msm_tls_tunnel_t *t, const char *what, const char *why)
{
    msm_log(t->failing ? MSM_LOG_DEBUG : MSM_LOG_WARN, FAC, "%s: %s %s:%s: %s", t->name, what,
            t->host, t->port, why);
    t->failing = 1;
}

/* ---- one connection ---- */

static void pair_close(pair_t *p)
{
    if (p->tls) {
        gnutls_bye(p->tls, GNUTLS_SHUT_WR); /* best effort: the socket is non-blocking */
        gnutls_deinit(p->tls);
    }
    if (p->remote >= 0)
        close(p->remote);
    if (p->local >= 0)
        close(p->local);
    free(p);
}

/* A TCP connection to the server, connect bounded by the timeout. @returns the fd or -1. */
static int tcp_connect(msm_tls_tunnel_t *t)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res, *ai;
    int rc = getaddrinfo(t->host, t->port, &hints, &res);
    if (rc != 0) {
        report(t, "cannot resolve", gai_strerror(rc));
        return -1;
    }
    struct timeval tv = {.tv_sec = t->timeout_ms / 1000,
                         .tv_usec = (suseconds_t)(t->timeout_ms % 1000) * 1000};
    int fd = -1;
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0)
            continue;
        /* The send timeout bounds connect(); both bound the blocking handshake. */
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        close(fd);
        fd = -1;
    }
    if (fd < 0)
        report(t, "cannot connect to", strerror(errno));
    freeaddrinfo(res);
    return fd;
}

/* Why the handshake of @p s failed, with the certificate check's findings when that was it. */
static void handshake_failed(msm_tls_tunnel_t *t, gnutls_session_t s, int rc)
{
    char why[512];
    snprintf(why, sizeof(why), "%s", gnutls_strerror(rc));
    if (rc == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
        gnutls_datum_t out = {0};
        unsigned status = gnutls_session_get_verify_cert_status(s);
        if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0) ==
            0) {
            snprintf(why, sizeof(why), "%s (%s)", gnutls_strerror(rc), (const char *)out.data);
            gnutls_free(out.data);
        }
    }
    report(t, "TLS handshake with", why);
}

/* The TLS connection for client connection @p local. @returns 0 or -1 (nothing kept). */
static int pair_open(msm_tls_tunnel_t *t, int local)
{
    pair_t *p = calloc(1, sizeof(*p));
    if (!p) {
        close(local);
        return -1;
    }
    p->local = local;
    p->remote = tcp_connect(t);
    if (p->remote < 0)
        goto fail;
    int rc = gnutls_init(&p->tls, GNUTLS_CLIENT);
    if (rc == 0)
        rc = gnutls_set_default_priority(p->tls);
    if (rc == 0)
        rc = gnutls_credentials_set(p->tls, GNUTLS_CRD_CERTIFICATE, t->cred);
    struct in6_addr a6;
    struct in_addr a4;
    int is_ip = inet_pton(AF_INET, t->host, &a4) == 1 || inet_pton(AF_INET6, t->host, &a6) == 1;
    if (rc == 0 && !is_ip) /* SNI names a host, never an address (RFC 6066) */
        rc = gnutls_server_name_set(p->tls, GNUTLS_NAME_DNS, t->host, strlen(t->host));
    if (rc != 0) {
        report(t, "TLS setup for", gnutls_strerror(rc));
        goto fail;
    }
    gnutls_session_set_verify_cert(p->tls, t->host, 0); /* name or IP address checked */
    gnutls_transport_set_int(p->tls, p->remote);
    gnutls_handshake_set_timeout(p->tls, t->timeout_ms);
    do {
        rc = gnutls_handshake(p->tls);
    } while (rc < 0 && !gnutls_error_is_fatal(rc) && !atomic_load(&t->stop));
    if (rc < 0) {
        handshake_failed(t, p->tls, rc);
        goto fail;
    }
    if (nonblocking(p->remote) != 0 || nonblocking(p->local) != 0)
        goto fail;
    if (t->failing)
        msm_log(MSM_LOG_INFO, FAC, "%s: TLS to %s:%s works again", t->name, t->host, t->port);
    t->failing = 0;
    atomic_fetch_add(&t->handshakes, 1);
    t->pairs[t->npairs++] = p;
    return 0;
fail:
    pair_close(p); /* the client sees its connection closed, and reconnects */
    return -1;
}

/* Moves what can move without blocking. @returns 0, or -1 when the pair is over. */
static int pair_pump(pair_t *p, short local_ev, short remote_ev)
{
    if (!p->up_len && (local_ev & (POLLIN | POLLHUP | POLLERR))) {
        ssize_t n = read(p->local, p->up, sizeof(p->up));
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
            return -1;
        if (n > 0) {
            p->up_len = (size_t)n;
            p->up_off = 0;
        }
    }
    while (p->up_off < p->up_len) {
        ssize_t n = gnutls_record_send(p->tls, p->up + p->up_off, p->up_len - p->up_off);
        if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
            break; /* called again with the same bytes, as GnuTLS asks */
        if (n < 0)
            return -1;
        p->up_off += (size_t)n;
    }
    if (p->up_off == p->up_len)
        p->up_len = p->up_off = 0;
    if (!p->down_len && ((remote_ev & (POLLIN | POLLHUP | POLLERR)) ||
                         gnutls_record_check_pending(p->tls) > 0)) {
        ssize_t n = gnutls_record_recv(p->tls, p->down, sizeof(p->down));
        if (n == 0 || (n < 0 && n != GNUTLS_E_AGAIN && n != GNUTLS_E_INTERRUPTED))
            return -1;
        if (n > 0) {
            p->down_len = (size_t)n;
            p->down_off = 0;
        }
    }
    while (p->down_off < p->down_len) {
        ssize_t n = write(p->local, p->down + p->down_off, p->down_len - p->down_off);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            break;
        if (n <= 0)
            return -1;
        p->down_off += (size_t)n;
    }
    if (p->down_off == p->down_len)
        p->down_len = p->down_off = 0;
    return 0;
}

/* ---- the thread ---- */

static void *tunnel_main(void *opaque)
{
    msm_tls_tunnel_t *t = opaque;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* signals are the daemon's main thread's */
    struct pollfd fds[2 + 2 * MAX_PAIRS];
    while (!atomic_load(&t->stop)) {
        int timeout = -1;
        fds[0] = (struct pollfd){.fd = t->wake[0], .events = POLLIN};
        fds[1] = (struct pollfd){.fd = t->npairs < MAX_PAIRS ? t->listen_fd : -1,
                                 .events = POLLIN};
        for (size_t i = 0; i < t->npairs; i++) {
            pair_t *p = t->pairs[i];
            int tls_wants_write = p->up_len && gnutls_record_get_direction(p->tls) == 1;
            fds[2 + 2 * i] = (struct pollfd){
                .fd = p->local,
                .events = (short)((p->up_len ? 0 : POLLIN) | (p->down_len ? POLLOUT : 0))};
            fds[3 + 2 * i] = (struct pollfd){
                .fd = p->remote,
                .events = (short)((p->down_len ? 0 : POLLIN) | (tls_wants_write ? POLLOUT : 0))};
            if (!p->down_len && gnutls_record_check_pending(p->tls) > 0)
                timeout = 0; /* decrypted bytes wait inside GnuTLS, not on the socket */
        }
        nfds_t nfds = 2 + 2 * t->npairs;
        if (poll(fds, nfds, timeout) < 0 && errno != EINTR)
            break;
        /* Pairs first: a pair opened below has no poll results yet. */
        for (size_t i = t->npairs; i-- > 0;) {
            pair_t *p = t->pairs[i];
            if (pair_pump(p, fds[2 + 2 * i].revents, fds[3 + 2 * i].revents) == 0)
                continue;
            pair_close(p);
            t->pairs[i] = t->pairs[--t->npairs];
        }
        if (fds[1].revents & POLLIN) {
            int fd = accept4(t->listen_fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0)
                pair_open(t, fd);
        }
    }
    while (t->npairs)
        pair_close(t->pairs[--t->npairs]);
    return NULL;
}

/* ---- life cycle ---- */

static int load_credentials(msm_tls_tunnel_t *t, const msm_tls_tunnel_conf_t *c, char *err,
                            size_t n)
{
    int rc = gnutls_certificate_allocate_credentials(&t->cred);
    if (rc < 0) {
        snprintf(err, n, "TLS credentials: %s", gnutls_strerror(rc));
        return -1;
    }
    rc = c->ca_file && *c->ca_file
             ? gnutls_certificate_set_x509_trust_file(t->cred, c->ca_file, GNUTLS_X509_FMT_PEM)
             : gnutls_certificate_set_x509_system_trust(t->cred);
    if (rc <= 0) { /* the number of CAs loaded: none is no trust at all */
        snprintf(err, n, "TLS CA %s: %s", c->ca_file && *c->ca_file ? c->ca_file : "(system)",
                 rc < 0 ? gnutls_strerror(rc) : "no certificate in it");
        return -1;
    }
    int have_cert = c->cert_file && *c->cert_file, have_key = c->key_file && *c->key_file;
    if (have_cert != have_key) {
        snprintf(err, n, "a TLS client certificate needs both its certificate and its key");
        return -1;
    }
    if (have_cert) {
        rc = gnutls_certificate_set_x509_key_file(t->cred, c->cert_file, c->key_file,
                                                  GNUTLS_X509_FMT_PEM);
        if (rc < 0) {
            snprintf(err, n, "TLS client certificate %s / key %s: %s", c->cert_file,
                     c->key_file, gnutls_strerror(rc));
            return -1;
        }
    }
    return 0;
}

/* The unix socket in a fresh private directory (only this user may connect). */
static int listen_private(msm_tls_tunnel_t *t, char *err, size_t n)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(t->dir, sizeof(t->dir), "%s/msm-tls-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(t->dir)) {
        snprintf(err, n, "TLS tunnel directory %s: %s", t->dir, strerror(errno));
        t->dir[0] = '\0';
        return -1;
    }
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(t->path, sizeof(t->path), "%s/s", t->dir);
    if (strlen(t->path) >= sizeof(sa.sun_path)) {
        snprintf(err, n, "TLS tunnel socket path too long: %s", t->path);
        return -1;
    }
    memcpy(sa.sun_path, t->path, strlen(t->path) + 1);
    t->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (t->listen_fd < 0 || bind(t->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        listen(t->listen_fd, 16) != 0) {
        snprintf(err, n, "TLS tunnel socket %s: %s", t->path, strerror(errno));
        return -1;
    }
    return 0;
}

msm_tls_tunnel_t *msm_tls_tunnel_new(const msm_tls_tunnel_conf_t *conf, char *err, size_t n)
{
    msm_tls_tunnel_t *t = calloc(1, sizeof(*t));
    if (!t) {
        snprintf(err, n, "out of memory");
        return NULL;
    }
    t->listen_fd = -1;
    t->wake[0] = t->wake[1] = -1;
    snprintf(t->host, sizeof(t->host), "%s", conf->host);
    snprintf(t->port, sizeof(t->port), "%d", conf->port);
    snprintf(t->name, sizeof(t->name), "%s", conf->name ? conf->name : "tls");
    t->timeout_ms = conf->timeout_ms ? conf->timeout_ms : 2000;
    if (load_credentials(t, conf, err, n) != 0 || listen_private(t, err, n) != 0)
        goto fail;
    if (pipe2(t->wake, O_CLOEXEC) != 0 || pthread_create(&t->thread, NULL, tunnel_main, t) != 0) {
        snprintf(err, n, "TLS tunnel thread: %s", strerror(errno));
        goto fail;
    }
    t->started = 1;
    return t;
fail:
    msm_tls_tunnel_free(t);
    return NULL;
}

const char *msm_tls_tunnel_path(const msm_tls_tunnel_t *t)
{
    return t->path;
}

uint64_t msm_tls_tunnel_handshakes(const msm_tls_tunnel_t *t)
{
    return atomic_load(&((msm_tls_tunnel_t *)t)->handshakes);
}

void msm_tls_tunnel_free(msm_tls_tunnel_t *t)
{
    if (!t)
        return;
    if (t->started) {
        atomic_store(&t->stop, 1);
        ssize_t w = write(t->wake[1], "x", 1);
        (void)w;
        pthread_join(t->thread, NULL);
    }
    for (int i = 0; i < 2; i++) {
        if (t->wake[i] >= 0)
            close(t->wake[i]);
    }
    if (t->listen_fd >= 0)
        close(t->listen_fd);
    if (t->path[0])
        unlink(t->path);
    if (t->dir[0])
        rmdir(t->dir);
    if (t->cred)
        gnutls_certificate_free_credentials(t->cred);
    free(t);
}
