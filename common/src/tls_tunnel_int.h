/* SPDX-License-Identifier: MIT */
/* A TLS client tunnel: a private unix socket whose every connection is carried over TLS to
 * one server. For clients without TLS of their own: Debian's hiredis 0.14 speaks only
 * plain TCP or unix sockets, so rediss:// connects hiredis to a tunnel (redis.c). One
 * thread per tunnel moves the bytes; the TLS is GnuTLS, verifying the server's certificate
 * and name and presenting a client certificate when one is given. Internal to libmsm-common. */
#ifndef MSM_TLS_TUNNEL_INT_H
#define MSM_TLS_TUNNEL_INT_H

#include <stddef.h>
#include <stdint.h>

typedef struct msm_tls_tunnel_s msm_tls_tunnel_t;

typedef struct {
    const char *host;      /**< the server's name or address: what its certificate must name */
    int port;
    const char *ca_file;   /**< PEM CAs to trust; NULL = the system's trust store */
    const char *cert_file; /**< PEM client certificate, with key_file; NULL = none */
    const char *key_file;
    uint32_t timeout_ms;   /**< TCP connect plus TLS handshake */
    const char *name;      /**< for logs */
} msm_tls_tunnel_conf_t;

/**
 * @brief Loads the credentials and starts the tunnel's thread and socket.
 * @returns NULL with the reason in @p err (a missing or bad CA, certificate or key file).
 */
msm_tls_tunnel_t *msm_tls_tunnel_new(const msm_tls_tunnel_conf_t *conf, char *err, size_t n);

/** @brief The unix socket path to connect to. */
const char *msm_tls_tunnel_path(const msm_tls_tunnel_t *t);

/** @brief Connections carried so far whose TLS handshake completed (for tests, metrics). */
uint64_t msm_tls_tunnel_handshakes(const msm_tls_tunnel_t *t);

/** @brief Stops the thread, closes every connection and removes the socket. NULL is a no-op. */
void msm_tls_tunnel_free(msm_tls_tunnel_t *t);

#endif
