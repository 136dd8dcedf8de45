/* SPDX-License-Identifier: MIT */
/* The outbound HTTP client every daemon uses (the router's pushes, the health checker's
 * probes): libcurl's multi_socket interface driven by our loop (sockets watched with
 * msm_loop_watch, curl's timeout on an msm_timer_t), a keep-alive connection pool, bounded
 * responses and one completion callback per request.
 *
 * Threading: one client belongs to one loop; every function and callback runs on the
 * loop's thread. Nothing blocks that thread: signals are off (CURLOPT_NOSIGNAL) and host
 * names are resolved by curl's threaded resolver when libcurl was built with one (see
 * msm_http_client_async_dns(); Debian's libcurl is). Redirects are not followed (a 3xx is
 * returned as it is); only http:// and https:// URLs are allowed; proxy environment
 * variables are ignored. */
#ifndef MSM_HTTP_CLIENT_H
#define MSM_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "msm/loop.h"
#include "msm/netpolicy.h"

typedef struct msm_http_client_s msm_http_client_t;
/** TLS settings of requests to https:// URLs, as PEM text in memory (see msm_http_tls_new()). */
typedef struct msm_http_tls_s msm_http_tls_t;
/** One request from submission to its callback (or cancellation). */
typedef struct msm_http_call_s msm_http_call_t;
/** The headers of a response (read-only, see msm_http_headers_get()). */
typedef struct msm_http_headers_s msm_http_headers_t;

/** Default cap on a response body: 8 MiB. */
#define MSM_HTTP_CLIENT_DEFAULT_MAX_RESPONSE ((size_t)8 * 1024 * 1024)
/** Cap on the stored response headers of one response (names, values and separators). */
#define MSM_HTTP_CLIENT_MAX_HEADER_BYTES ((size_t)64 * 1024)

typedef struct {
    unsigned max_total_connections; /**< open connections in all (CURLMOPT_MAX_TOTAL_CONNECTIONS)
                                         and idle ones kept for reuse (CURLMOPT_MAXCONNECTS);
                                         requests beyond it wait for one. 0 = 256 */
    unsigned max_host_connections;  /**< per host:port (CURLMOPT_MAX_HOST_CONNECTIONS); 0 = 64 */
    uint32_t timeout_ms;            /**< default total time per request, queueing for a
                                         connection included; 0 = 30000 */
    uint32_t connect_timeout_ms;    /**< TCP (and TLS) connect; 0 = 5000 */
    unsigned idle_timeout_s;        /**< an idle pooled connection older than this is not
                                         reused but closed (CURLOPT_MAXAGE_CONN); 0 = 55, just
                                         under the 60 s our own server keeps idle ones */
    size_t max_response_bytes;      /**< body cap; 0 = MSM_HTTP_CLIENT_DEFAULT_MAX_RESPONSE */
    const char *user_agent;         /**< NULL = "msm/<version>" */
    const char *proxy;              /**< proxy URL; NULL = none (environment ignored) */
    /** PEM CA bundle file trusted for https:// instead of libcurl's default store (the
     *  system's CA file and directory); read by libcurl when it opens a connection. NULL =
     *  the default store. A request's own CAs (msm_http_tls_new()) replace either. Copied. */
    const char *ca_file;
    /** When set, every address the client is about to connect to is judged first (curl's
     *  open-socket callback: the address of the connection itself, after any DNS lookup,
     *  so a name that changes its answer cannot slip through). A denied one is never
     *  connected to; the request fails with MSM_ERR_DENIED and the reason. With a proxy,
     *  the proxy's address is the one judged. Copied; NULL = no check. */
    const msm_netpolicy_t *netpolicy;
} msm_http_client_conf_t;

/** A request header. */
typedef struct {
    const char *name;  /**< a token: no spaces, ':' or control characters */
    const char *value; /**< no CR or LF; "" sends the header with an empty value */
} msm_http_header_t;

/** msm_http_request_t.flags: the body is borrowed, not copied (see below). */
#define MSM_HTTP_BODY_BORROW 0x1

typedef struct {
    /** "GET", "POST", "PUT", "DELETE", "HEAD", ... (upper-case letters only); NULL = "POST"
     *  when there is a body, "GET" otherwise. */
    const char *method;
    /** http:// or https:// URL (copied). */
    const char *url;
    /** Extra headers (copied). They replace curl's own of the same name (User-Agent,
     *  Accept, Host, ...). A body without a Content-Type header is sent without one. */
    const msm_http_header_t *headers;
    size_t n_headers;
    /** The body, may be NULL when body_len is 0. Copied unless flags has
     *  MSM_HTTP_BODY_BORROW: then it must stay valid and unchanged until the callback runs
     *  or msm_http_call_cancel() returns. */
    const void *body;
    size_t body_len;
    int flags;
    /** Total time allowed for this request; 0 = the client's timeout_ms. */
    uint32_t timeout_ms;
    /** Response body cap for this request; 0 = the client's max_response_bytes. */
    size_t max_response_bytes;
    /** TLS settings for an https:// URL; NULL = the client's trust (ca_file or the default
     *  store) and no client certificate. The request takes a reference (released once
     *  libcurl cannot read it any more), so the caller may release its own at any time.
     *  A kept-alive connection serves only requests whose settings are equal to those it
     *  was opened with (libcurl compares CAs and certificates, not keys). */
    msm_http_tls_t *tls;
} msm_http_request_t;

/**
 * What became of a request. Everything it points to is borrowed for the duration of the
 * callback: copy what you keep.
 */
typedef struct {
    /** MSM_OK when a complete response arrived, whatever its status. Otherwise:
     *  MSM_ERR_TIMEOUT (the request's time ran out), MSM_ERR_IO (connect refused, reset,
     *  DNS failure, no response, TLS...), MSM_ERR_DENIED (the client's netpolicy refused
     *  every address of the host: nothing was connected to), MSM_ERR_TOOLARGE (body or
     *  headers over the cap),
     *  MSM_ERR_INVALID (malformed URL), MSM_ERR_SHUTDOWN (msm_http_client_free() ran
     *  first: error is "client closed"), MSM_ERR_NOMEM. */
    int err;
    /** NULL when err is MSM_OK; otherwise a human-readable reason. */
    const char *error;
    /** The CURLcode behind err (0 for MSM_OK and for "client closed"). */
    int curl_code;
    /** HTTP status of the response, 0 when none arrived. May be set when err is not MSM_OK
     *  (e.g. a body over the cap after the status line). */
    int status;
    /** The response headers (never NULL; empty when no response arrived). */
    const msm_http_headers_t *headers;
    /** The response body, NUL-terminated for convenience ("" when none). */
    const char *body;
    size_t body_len;
    /** Milliseconds from submission to completion (waiting for a connection included). */
    uint64_t latency_ms;
    /** 1 when the response came over a kept-alive connection opened for an earlier
     *  request; 0 when this request opened its connection or got no response. */
    int reused;
} msm_http_result_t;

/**
 * Completion callback, called exactly once per accepted request (never after
 * msm_http_call_cancel()), never from inside msm_http_client_request().
 * @remark @p call is handed back for identification only; it dies when the callback
 * returns.
 */
typedef void msm_http_done_cb(msm_http_client_t *cl,
                              msm_http_call_t *call,
                              const msm_http_result_t *res,
                              void *opaque);

/** Counters since msm_http_client_new() (for metrics and tests). */
typedef struct {
    uint64_t started;            /**< requests accepted by msm_http_client_request() */
    uint64_t completed;          /**< callbacks with err == MSM_OK (any HTTP status) */
    uint64_t failed;             /**< callbacks with an error (timeouts, "client closed" too) */
    uint64_t timeouts;           /**< of those, MSM_ERR_TIMEOUT */
    uint64_t cancelled;          /**< requests cancelled (no callback) */
    uint64_t connections_opened; /**< new connections the requests made (CURLINFO_NUM_CONNECTS) */
    uint64_t connections_reused; /**< responses that came over a reused connection */
} msm_http_client_stats_t;

/**
 * @brief TLS settings from PEM text, copied: @p ca_pem the CAs trusted instead of the client's
 * (NULL = the client's), @p cert_pem with @p key_pem a client certificate and its
 * unencrypted key (both NULL = none). Nothing is parsed here: bad PEM fails the requests
 * that use it (MSM_ERR_IO with libcurl's reason); check it first (msm/pem.h).
 * @returns a reference the caller owns (msm_http_tls_release()), or NULL when out of memory
 * or given only one of @p cert_pem and @p key_pem.
 * @remark loop thread only, like the client (the count is not atomic).
 */
msm_http_tls_t *msm_http_tls_new(const char *ca_pem, const char *cert_pem, const char *key_pem);

/** @brief Takes another reference to @p tls. @returns @p tls. */
msm_http_tls_t *msm_http_tls_keep(msm_http_tls_t *tls);

/** @brief Drops a reference; the last one wipes the key and frees. Safe with NULL. */
void msm_http_tls_release(msm_http_tls_t *tls);

/** @brief Fills @p conf with the defaults above (all zero / NULL). */
void msm_http_client_conf_init(msm_http_client_conf_t *conf);

/**
 * @brief Creates a client on @p loop (calls curl_global_init(), reference counted by curl).
 * @param loop borrowed; must outlive the client
 * @param conf read during the call (strings copied); NULL = defaults
 * @returns the client, or NULL with the reason in @p errbuf.
 */
msm_http_client_t *msm_http_client_new(msm_loop_t *loop,
                                       const msm_http_client_conf_t *conf,
                                       char *errbuf,
                                       size_t errbuf_size);

/**
 * @brief Frees the client and its connections. Every request still in flight has its
 * callback run first, inside this call, with err MSM_ERR_SHUTDOWN and error "client
 * closed"; requests submitted from those callbacks are refused (MSM_ERR_SHUTDOWN).
 * Safe with NULL, and from any of this client's callbacks.
 */
void msm_http_client_free(msm_http_client_t *cl);

/**
 * @brief Starts a request.
 * @param req read during the call; see msm_http_request_t for what is copied
 * @param cb called exactly once, later, from a loop callback (or from
 *        msm_http_client_free()) unless the request is cancelled
 * @param call_out if not NULL, receives the request's handle for msm_http_call_cancel();
 *        it is valid until the callback returns or the request is cancelled
 * @returns MSM_OK when @p cb will be called; otherwise @p cb is never called:
 * MSM_ERR_INVALID (no cb, bad method, URL not http(s)://, bad header),
 * MSM_ERR_SHUTDOWN (during msm_http_client_free()) or MSM_ERR_NOMEM.
 */
int msm_http_client_request(msm_http_client_t *cl,
                            const msm_http_request_t *req,
                            msm_http_done_cb *cb,
                            void *opaque,
                            msm_http_call_t **call_out);

/**
 * @brief Cancels a request: its callback will not be called, its connection is closed
 * (or never opened) and a borrowed body is released. Called from inside the request's own
 * callback it does nothing.
 */
void msm_http_call_cancel(msm_http_call_t *call);

/** @brief Copies the counters into @p out. */
void msm_http_client_stats(const msm_http_client_t *cl, msm_http_client_stats_t *out);

/** @brief Requests accepted whose callback has not run yet. */
size_t msm_http_client_pending(const msm_http_client_t *cl);

/**
 * @brief The host of @p url as libcurl reads it (the one a request would connect to):
 * an IPv6 literal without its brackets, an IPv4 literal in dotted form.
 * @returns MSM_OK, MSM_ERR_INVALID (not a URL with a host) or MSM_ERR_TOOLARGE (over
 * @p size).
 */
int msm_http_url_host(const char *url, char *host, size_t size);

/** @brief 1 when libcurl resolves host names without blocking (threaded or c-ares). */
int msm_http_client_async_dns(void);

/**
 * @brief The value of response header @p name (case-insensitive), leading and trailing
 * blanks removed, or NULL. The first one when repeated.
 */
const char *msm_http_headers_get(const msm_http_headers_t *h, const char *name);

/** @brief Number of response header lines. */
size_t msm_http_headers_count(const msm_http_headers_t *h);

/**
 * @brief Header @p i (0-based, in arrival order): sets @p name and @p value.
 * @returns MSM_OK, or MSM_ERR_NOTFOUND when @p i is out of range.
 */
int msm_http_headers_at(const msm_http_headers_t *h,
                        size_t i,
                        const char **name,
                        const char **value);

#endif
