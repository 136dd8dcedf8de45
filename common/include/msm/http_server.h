/* SPDX-License-Identifier: MIT */
/* The HTTP server every daemon embeds: libmicrohttpd driven by our event loop (its epoll fd
 * watched, MHD_run on readiness, a timer from MHD_get_timeout), routes with {params},
 * requests answered now or later (suspend/resume), and the built-in /healthz, /readyz,
 * /metrics and /debug/info. Every function runs on the loop's thread. */
#ifndef MSM_HTTP_SERVER_H
#define MSM_HTTP_SERVER_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "msm/loop.h"
#include "msm/metrics.h"

typedef struct msm_http_server_s msm_http_server_t;
/** One request; owned by the server (see "Request lifetime" below). */
typedef struct msm_http_req_s msm_http_req_t;

/** Default request body limit: 1 MiB (API.md). */
#define MSM_HTTP_DEFAULT_MAX_BODY ((size_t)1024 * 1024)
/** Default total request deadline: 30 s from the request line to the last body byte. */
#define MSM_HTTP_DEFAULT_REQUEST_DEADLINE_MS 30000u
/** Most {params} one route pattern may have. */
#define MSM_HTTP_MAX_PARAMS 8

/**
 * Readiness probe behind GET /readyz.
 * @param why buffer for a short reason when not ready (NUL-terminated by the callee)
 * @returns non-zero when ready, 0 when not.
 */
typedef int msm_http_ready_cb(void *opaque, char *why, size_t n);

/**
 * A route handler, called on the loop thread once the whole request (body included) has
 * arrived. It answers with one of the msm_http_respond*() calls, either before returning or
 * later from any loop callback.
 */
typedef void msm_http_handler_cb(msm_http_req_t *req, void *opaque);

/** Called when the server gives up on a request that still awaits its late response. */
typedef void msm_http_cancel_cb(msm_http_req_t *req, void *opaque);

typedef struct {
    const char *bind_address; /**< numeric address or host name; NULL = "0.0.0.0" */
    int port;                 /**< 0 = ephemeral (see msm_http_server_port()) */
    size_t max_body_bytes;    /**< 0 = MSM_HTTP_DEFAULT_MAX_BODY; larger bodies get 413 */
    const char *name;         /**< daemon name for /debug/info and logs; NULL = "msm" */
    msm_metrics_t *metrics;   /**< borrowed registry; NULL = the server creates its own */
    msm_http_ready_cb *ready; /**< NULL = always ready */
    void *ready_opaque;
    const json_t *config;     /**< shown as "config" by /debug/info (deep-copied; mask
                                   secrets before); NULL = null */
    unsigned max_connections; /**< 0 = 1024 */
    unsigned idle_timeout_s;  /**< idle keep-alive connections close after it; 0 = 60 */
    /** > 0: serve this listening socket (the server owns it from then on, even on failure)
     *  instead of binding bind_address:port; a prefork supervisor hands it to workers. */
    int listen_fd;
    /** > 0: a response on a connection older than this says `Connection: close`, so a
     *  keep-alive client reconnects and the kernel may hand it to another process serving
     *  the same socket (gRPC's max connection age); 0 = connections live until idle. */
    unsigned max_connection_age_ms;
    /** A request whose headers and body have not all arrived this long after its request
     *  line, or a new connection without a complete request line this long after it was
     *  accepted, is dropped (the connection is shut down, no answer): a slow client cannot
     *  hold a connection by trickling bytes, which the idle timeout alone allows.
     *  0 = MSM_HTTP_DEFAULT_REQUEST_DEADLINE_MS. */
    unsigned request_deadline_ms;
    /** Most connections open at once from one client IP address; 0 = no cap besides
     *  max_connections. */
    unsigned max_connections_per_ip;
    /** PEM files (paths, read once by msm_http_server_new()). With a certificate and its
     *  key the server speaks HTTPS only (libmicrohttpd over GnuTLS); NULL or "" = plain
     *  HTTP. With a client CA too, every request but GET /healthz and /readyz needs a client
     *  certificate that CA signed (else 401 UNAUTHENTICATED), and its subject's common name
     *  is msm_http_req_client_subject(). */
    const char *tls_cert_file;
    const char *tls_key_file;
    const char *tls_client_ca_file;
} msm_http_server_conf_t;

/**
 * @brief Binds a listening TCP socket (non-blocking, close-on-exec, SO_REUSEADDR, and
 * SO_REUSEPORT when @p reuse_port) on @p host:@p port (0: a free port), for
 * msm_http_server_conf_t.listen_fd.
 * @param bound receives the port bound
 * @returns the socket, or -1 with a reason in @p errbuf.
 */
int msm_http_listen(const char *host, int port, int reuse_port, uint16_t *bound, char *errbuf,
                    size_t errbuf_size);

/**
 * Decides whether a request may reach its route, called once its headers are in and before
 * its body is read (so a refused client cannot make the server buffer a body).
 * @param pattern the matched route's pattern ("/v1/topics/{topic}:publish"); path
 *        parameters and headers of @p req can be read
 * @param msg receives the refusal's message
 * @returns 0 to let it through, or the status to answer instead: 401 (UNAUTHENTICATED; add
 * WWW-Authenticate with msm_http_add_header()), 403 (PERMISSION_DENIED) or 429.
 */
typedef int msm_http_guard_cb(msm_http_req_t *req, const char *pattern, void *opaque,
                              char *msg, size_t n);

/** @brief Fills @p conf with the defaults above (all zero / NULL). */
void msm_http_server_conf_init(msm_http_server_conf_t *conf);

/**
 * @brief Binds, listens and starts serving on @p loop.
 * @param loop the loop the server runs on (borrowed; must outlive the server)
 * @param conf settings (read during the call; strings are copied)
 * @param errbuf receives a reason on failure (e.g. "bind 0.0.0.0:8080: Address in use")
 * @returns the server, or NULL on failure.
 */
msm_http_server_t *msm_http_server_new(msm_loop_t *loop, const msm_http_server_conf_t *conf,
                                       char *errbuf, size_t errbuf_size);

/**
 * @brief Stops the server: stops accepting, calls the cancel callback of every request still
 * awaiting a late response and answers it 503 SHUTTING_DOWN (sent within about 200 ms, the
 * only wait), closes every connection, frees everything (its own metrics registry too).
 * Safe with NULL.
 * @remark Not from inside a handler. No request pointer may be used afterwards.
 */
void msm_http_server_free(msm_http_server_t *srv);

/**
 * @brief Stops accepting new connections (the listen socket is closed); open connections
 * keep being served, /readyz answers 503 SHUTTING_DOWN. Idempotent.
 * @returns MSM_OK or MSM_ERR_IO.
 */
int msm_http_server_quiesce(msm_http_server_t *srv);

/** @brief The port actually bound (the ephemeral one when conf.port was 0). */
/** @brief Puts @p cb in front of every route (NULL: none). */
void msm_http_server_set_guard(msm_http_server_t *srv, msm_http_guard_cb *cb, void *opaque);

/** @brief The caller a guard identified (an msm_principal_t for the daemons), or NULL. */
void msm_http_req_set_principal(msm_http_req_t *req, void *principal);
void *msm_http_req_principal(const msm_http_req_t *req);

uint16_t msm_http_server_port(const msm_http_server_t *srv);

/** @brief Client connections open now (idle keep-alive ones included). */
unsigned msm_http_server_connections(const msm_http_server_t *srv);

/** @brief The registry /metrics renders (the borrowed one or the server's own). */
msm_metrics_t *msm_http_server_metrics(msm_http_server_t *srv);

/** @brief Requests whose handler returned without responding yet. */
size_t msm_http_server_pending(const msm_http_server_t *srv);

/**
 * @brief Adds a route.
 * @param method an HTTP method in upper case ("GET", "PUT", ...); a GET route also answers
 *        HEAD unless a HEAD route exists
 * @param pattern an absolute path of '/'-separated segments. A segment is literal text, or
 *        `[prefix]{name}[suffix]`: one parameter with optional literal text around it in the
 *        same segment, e.g. `/v1/topics/{topic}:publish`. A parameter matches one non-empty
 *        segment (never a '/'); its value is percent-decoded (a malformed escape or %00 gets
 *        400 INVALID_ARGUMENT). Literals are compared with the raw path, byte for byte.
 * @returns MSM_OK; MSM_ERR_INVALID for a bad method or pattern; MSM_ERR_EXISTS when the same
 * method and pattern shape is already routed; MSM_ERR_NOMEM.
 * @remark Precedence: of the patterns matching a path, the most specific wins, comparing
 * segment by segment from the left: a literal segment beats a parameter segment, and of two
 * parameter segments the one with more literal prefix+suffix text wins
 * (`/v1/topics/{topic}:publish` beats `/v1/topics/{topic}` for "orders:publish", while
 * "orders" only matches the latter). The winning pattern then picks the handler by method;
 * when it has none for the request's method the answer is 405 METHOD_NOT_ALLOWED with an
 * Allow header (no fallback to a less specific pattern). No match: 404 NOT_FOUND.
 * The built-in GET /healthz, /readyz, /metrics, /debug/info are routes too.
 */
int msm_http_server_route(msm_http_server_t *srv, const char *method, const char *pattern,
                          msm_http_handler_cb *cb, void *opaque);

/** One row of a route table. */
typedef struct {
    const char *method;
    const char *pattern;
    msm_http_handler_cb *cb;
} msm_http_route_t;

/** @brief msm_http_server_route() for each of @p n rows, all with @p opaque; stops at the
 *  first error and returns it. */
int msm_http_server_routes(msm_http_server_t *srv, const msm_http_route_t *routes, size_t n,
                           void *opaque);

/*
 * Request lifetime. The server creates a request when its request line arrives and calls
 * the handler once the whole body is in. The request pointer is valid from then until the
 * handler (or whoever it handed the pointer to) calls one of msm_http_respond*() — whether
 * before returning (synchronous) or later from any loop callback (deferred: the connection
 * is suspended meanwhile). Respond exactly once; after that, never touch the pointer again.
 * If the client goes away while a response is deferred, nothing is noticed until the
 * response is written: the pointer stays valid until you respond. The only other end is
 * msm_http_server_free(), which calls the cancel callback (msm_http_req_on_cancel) of each
 * deferred request first, so its owner can forget the pointer.
 */

/** @brief The request method ("GET", ...). */
const char *msm_http_req_method(const msm_http_req_t *req);
/** @brief The raw path, without the query string (not percent-decoded). */
const char *msm_http_req_path(const msm_http_req_t *req);
/** @brief The pattern of the route that matched (e.g. "/v1/topics/{topic}"). */
const char *msm_http_req_route(const msm_http_req_t *req);
/** @brief The percent-decoded value of route parameter @p name, or NULL. */
const char *msm_http_req_param(const msm_http_req_t *req, const char *name);
/**
 * @brief The first value of query parameter @p name, decoded (%XX and '+' as space), or
 * NULL when absent ("" for `?flag` or `?flag=`).
 */
const char *msm_http_req_query(msm_http_req_t *req, const char *name);
/** @brief A request header by case-insensitive name, or NULL. */
const char *msm_http_req_header(const msm_http_req_t *req, const char *name);
/**
 * Called by msm_http_req_headers() once per request header.
 * @returns 0 to go on, non-zero to stop.
 */
typedef int msm_http_header_cb(void *opaque, const char *name, const char *value);
/**
 * @brief Visits every request header in the order received, names spelled as sent (for
 * prefixed families such as `Msm-Attr-*`).
 * @returns the number of headers visited.
 * @remark @p name and @p value stay valid while the request does.
 */
size_t msm_http_req_headers(const msm_http_req_t *req, msm_http_header_cb *cb, void *opaque);
/**
 * @brief The complete body, NUL-terminated for convenience ("" when none).
 * @param len receives its length in bytes (may be NULL)
 */
const char *msm_http_req_body(const msm_http_req_t *req, size_t *len);
/** @brief The client's address as "1.2.3.4:5678" or "[::1]:5678". */
const char *msm_http_req_remote_addr(msm_http_req_t *req);
/**
 * @brief The common name (CN) in the subject of the client certificate, when the server has
 * a client CA and the certificate the client presented on this connection verified against
 * it; NULL otherwise (plain HTTP, no client CA, no or an unverified certificate, or a CN
 * longer than 255 bytes). Map it to a principal; it is not checked against anything else.
 * @remark Valid while the request is.
 */
const char *msm_http_req_client_subject(const msm_http_req_t *req);
/** @brief The server the request arrived on. */
msm_http_server_t *msm_http_req_server(const msm_http_req_t *req);
/**
 * @brief Sets the callback msm_http_server_free() calls if this request still awaits its
 * response then (after which the server answers 503 itself, unless the callback responded).
 */
void msm_http_req_on_cancel(msm_http_req_t *req, msm_http_cancel_cb *cb, void *opaque);

/**
 * @brief Adds a response header (e.g. Retry-After, Location) sent with the response.
 * Call before responding. @returns MSM_OK, MSM_ERR_INVALID (CR/LF in name or value, or
 * already responded) or MSM_ERR_NOMEM.
 */
int msm_http_add_header(msm_http_req_t *req, const char *name, const char *value);

/**
 * @brief Answers the request.
 * @param status 200..999
 * @param content_type the Content-Type, or NULL for none
 * @param body the body (copied), may be NULL when @p len is 0
 * @returns MSM_OK, or MSM_ERR_INVALID (already responded, bad status), MSM_ERR_NOMEM. On
 * any return the request must not be used again unless it was MSM_ERR_INVALID.
 */
int msm_http_respond(msm_http_req_t *req, int status, const char *content_type,
                     const void *body, size_t len);

/**
 * @brief Answers with @p body serialised compactly as application/json.
 * @param body reference STOLEN (always, even on failure)
 */
int msm_http_respond_json(msm_http_req_t *req, int status, json_t *body);

/**
 * @brief Answers with the API.md error body
 * `{"error":{"code":…,"message":…,"details":[…]}}` (see msm/json.h).
 * @param code UPPER_SNAKE code, e.g. "NOT_FOUND"
 * @param message human-readable, may be NULL
 * @param details array, reference STOLEN; NULL = []
 */
int msm_http_respond_error(msm_http_req_t *req, int status, const char *code,
                           const char *message, json_t *details);

#endif
