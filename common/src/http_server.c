/* SPDX-License-Identifier: MIT */
/* libmicrohttpd on the msm loop: MHD's epoll fd is watched by our loop, MHD_run runs on
 * readiness, on MHD_get_timeout's timer and in a before-sleep hook after a deferred response
 * resumed a connection (libmicrohttpd src/examples/suspend_resume_epoll.c). Routing, request
 * accessors, responses, metrics and the built-in endpoints live here too. */
#include "hex_int.h"
#include "msm/http_server.h"
#include "msm/buf.h"
#include "msm/err.h"
#include "msm/json.h"
#include "msm/log.h"
#include "msm/version.h"

#include <arpa/inet.h>
#include <errno.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* A connection's MHD memory pool: the request line and headers must fit, bodies stream
 * through it in chunks. MHD zeroes the pool between the requests of a kept-alive connection,
 * so its size is a memset per request (64 KB was 10% of a lambda's CPU per push). */
#define CONNECTION_MEMORY ((size_t)16 * 1024)

#define FAC "http"
/* Past the body limit, up to this much more is read and dropped so that the 413 can be sent
 * on a healthy connection; a client sending even more is disconnected. */
#define DISCARD_MAX ((size_t)1024 * 1024)
#define MAX_SEGS 32
#define METRIC_CACHE 16
#define SHUTDOWN_FLUSH_MS 200

/* ---- types ---- */

typedef struct {
    const char *sg_lit; /* the literal segment, or the text before the parameter */
    size_t sg_lit_len;
    const char *sg_param; /* parameter name; NULL for a literal segment */
    const char *sg_suffix;
    size_t sg_suffix_len;
} seg_t;

typedef struct {
    int mc_method;
    int mc_status;
    msm_metric_child_t *mc_child;
} mcache_t;

typedef struct route_s {
    struct route_s *rt_next;
    char *rt_method;
    char *rt_pattern;
    char *rt_buf; /* segment texts, NUL-separated; seg_t pointers point here */
    seg_t *rt_segs;
    size_t rt_nsegs;
    msm_http_handler_cb *rt_cb;
    void *rt_opaque;
    msm_metric_child_t *rt_hist; /* looked up once, on first use */
    mcache_t rt_mcache[METRIC_CACHE];
    size_t rt_nmcache;
} route_t;

typedef enum {
    RQ_HEADERS,  /* request line and headers in; first MHD call pending */
    RQ_BODY,     /* receiving the body */
    RQ_HANDLER,  /* inside the handler (or answering an error ourselves) */
    RQ_DEFERRED, /* handler returned without answering: connection suspended */
    RQ_READY,    /* late answer built, connection resumed, waiting for MHD to take it */
    RQ_DONE,     /* answer queued in MHD */
} rq_state_t;

typedef struct {
    const char *kv_key;
    const char *kv_value;
} kv_t;

typedef struct {
    char *h_name;
    char *h_value;
} hdr_t;

/* A connection before its first request line, or a request before its last body byte: what
 * the deadline sweep may drop. A connection's one is its socket context. */
typedef struct arrival_s {
    struct arrival_s *ar_prev, *ar_next;
    struct MHD_Connection *ar_conn;
    uint64_t ar_since_ns; /* accepted / request line received */
    int ar_listed;
} arrival_t;

struct msm_http_req_s {
    msm_http_server_t *rq_srv;
    struct MHD_Connection *rq_conn;
    msm_http_req_t *rq_prev, *rq_next; /* the server's deferred list */
    rq_state_t rq_state;
    int rq_in_handler;
    int rq_queue_failed;
    const char *rq_method;
    int rq_method_idx;
    route_t *rq_route;
    int rq_err_status; /* an error found before the handler (404, 405, 400, 413), or 0 */
    const char *rq_err_code;
    const char *rq_err_msg;
    char rq_allow[96];
    char rq_err_buf[192]; /* a guard's refusal message */
    void *rq_principal;   /* who is calling (set by the guard), or NULL */
    uint64_t rq_start_ns;
    const char *rq_path;
    const char *rq_query; /* raw, after '?'; NULL when none */
    char *rq_scratch;     /* decoded params and query values */
    size_t rq_scratch_used, rq_scratch_cap;
    size_t rq_nparams;
    const char *rq_pnames[MSM_HTTP_MAX_PARAMS];
    const char *rq_pvalues[MSM_HTTP_MAX_PARAMS];
    kv_t *rq_qs;
    size_t rq_nqs;
    int rq_qs_parsed;
    char *rq_body;
    size_t rq_body_len, rq_body_cap;
    size_t rq_body_seen; /* bytes received, kept or not */
    int rq_discard;      /* body over the limit: read and dropped */
    char rq_remote[64];
    hdr_t *rq_hdrs;
    size_t rq_nhdrs;
    struct MHD_Response *rq_resp; /* the late answer, until MHD takes it */
    int rq_status;
    msm_http_cancel_cb *rq_cancel_cb;
    void *rq_cancel_opaque;
    arrival_t rq_arrival;
    char *rq_subject; /* CN of the verified client certificate, or NULL */
    char rq_mem[]; /* copy of the raw URI, then the scratch area */
};

struct msm_http_server_s {
    msm_loop_t *hs_loop;
    struct MHD_Daemon *hs_mhd;
    int hs_epfd;
    msm_timer_t hs_timer;
    int hs_hook_added;
    int hs_need_run;
    int hs_quiesced;
    int hs_stopping;
    uint16_t hs_port;
    size_t hs_max_body;
    msm_http_guard_cb *hs_guard;
    void *hs_guard_opaque;
    uint64_t hs_max_conn_age_ns; /* 0: no limit */
    uint64_t hs_deadline_ns;     /* request line to last body byte */
    /* Connections and requests still arriving, oldest first: the sweep timer drops those
     * past the deadline. */
    arrival_t *hs_arriving, *hs_arriving_tail;
    msm_timer_t hs_sweep;
    msm_metric_child_t *hs_dropped_deadline;
    char *hs_tls_pem[3]; /* certificate, key, client CA (PEM text), until MHD stops */
    int hs_tls_verify;   /* a client CA is set: requests need a verified client certificate */
    char *hs_name;
    msm_metrics_t *hs_metrics;
    int hs_own_metrics;
    msm_metric_t *hs_m_requests;
    msm_metric_t *hs_m_duration;
    msm_metric_child_t *hs_inflight;
    msm_http_ready_cb *hs_ready;
    void *hs_ready_opaque;
    json_t *hs_config;
    route_t *hs_routes, *hs_routes_tail;
    route_t hs_unmatched; /* metrics bucket of requests no route matched */
    msm_http_req_t *hs_deferred;
    size_t hs_ndeferred;
    size_t hs_live; /* requests created and not yet completed */
    uint64_t hs_started_ns;
};

static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"};
#define NMETHODS ((int)(sizeof(methods) / sizeof(methods[0])))

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int method_index(const char *m)
{
    for (int i = 0; i < NMETHODS; i++) {
        if (strcmp(methods[i], m) == 0)
            return i;
    }
    return NMETHODS; /* "OTHER" */
}

/* ---- driving MHD from the loop ---- */

static void on_timer(msm_loop_t *loop, void *opaque);

static void arm_timer(msm_http_server_t *srv)
{
    MHD_UNSIGNED_LONG_LONG to = 0;
    if (MHD_get_timeout(srv->hs_mhd, &to) == MHD_YES)
        msm_loop_timer_start(srv->hs_loop, &srv->hs_timer, (uint64_t)to, on_timer, srv);
    else
        msm_loop_timer_stop(srv->hs_loop, &srv->hs_timer);
}

static void run_mhd(msm_http_server_t *srv)
{
    srv->hs_need_run = 0;
    if (MHD_run(srv->hs_mhd) != MHD_YES)
        msm_log(MSM_LOG_WARN, FAC, "MHD_run failed");
    arm_timer(srv);
}

static void on_epoll(msm_loop_t *loop, int fd, int events, void *opaque)
{
    (void)loop, (void)fd, (void)events;
    run_mhd(opaque);
}

static void on_timer(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    run_mhd(opaque);
}

/* A deferred answer resumed a connection outside MHD_run: run it before the loop sleeps. */
static void before_sleep(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    msm_http_server_t *srv = opaque;
    if (srv->hs_need_run)
        run_mhd(srv);
}

static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char buf[512];
    vsnprintf(buf, sizeof(buf), fmt, ap);
    size_t n = strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    msm_log(MSM_LOG_WARN, FAC, "libmicrohttpd: %s", buf);
}

/* ---- percent-decoding ---- */

/* Decodes n bytes of s into out (room for n + 1). strict: a bad escape or %00 fails (-1);
 * otherwise a bad escape is kept as is. form: '+' means space. Returns the length. */
static long pct_decode(const char *s, size_t n, char *out, int strict, int form)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            int hi = i + 2 < n ? msm__hex_value(s[i + 1]) : -1;
            int lo = i + 2 < n ? msm__hex_value(s[i + 2]) : -1;
            if (hi >= 0 && lo >= 0 && (hi || lo)) {
                out[o++] = (char)(hi * 16 + lo);
                i += 2;
                continue;
            }
            if (strict)
                return -1;
        } else if (c == '+' && form) {
            c = ' ';
        }
        out[o++] = c;
    }
    out[o] = '\0';
    return (long)o;
}

static char *scratch_take(msm_http_req_t *req, size_t n)
{
    if (req->rq_scratch_used + n > req->rq_scratch_cap)
        return NULL; /* cannot happen: decoded text is never longer than the URI */
    char *p = req->rq_scratch + req->rq_scratch_used;
    req->rq_scratch_used += n;
    return p;
}

/* ---- routes ---- */

typedef struct {
    const char *sp_p;
    size_t sp_n;
} span_t;

/* Splits "/a/b" into "a","b" ("/" is one empty segment). Returns the count, or -1. */
static int split_path(const char *path, size_t len, span_t *segs)
{
    if (len == 0 || path[0] != '/')
        return -1;
    int n = 0;
    size_t start = 1;
    for (size_t i = 1; i <= len; i++) {
        if (i == len || path[i] == '/') {
            if (n == MAX_SEGS)
                return -1;
            segs[n].sp_p = path + start;
            segs[n].sp_n = i - start;
            n++;
            start = i + 1;
        }
    }
    return n;
}

static int seg_matches(const seg_t *sg, const span_t *sp)
{
    if (!sg->sg_param)
        return sp->sp_n == sg->sg_lit_len && memcmp(sp->sp_p, sg->sg_lit, sp->sp_n) == 0;
    if (sp->sp_n <= sg->sg_lit_len + sg->sg_suffix_len)
        return 0; /* the parameter must not be empty */
    return memcmp(sp->sp_p, sg->sg_lit, sg->sg_lit_len) == 0 &&
           memcmp(sp->sp_p + sp->sp_n - sg->sg_suffix_len, sg->sg_suffix, sg->sg_suffix_len) ==
               0;
}

static int route_matches(const route_t *rt, const span_t *segs, int n)
{
    if ((int)rt->rt_nsegs != n)
        return 0;
    for (int i = 0; i < n; i++) {
        if (!seg_matches(&rt->rt_segs[i], &segs[i]))
            return 0;
    }
    return 1;
}

/* > 0 when a is more specific than b, < 0 when less, 0 when equally (same shape). */
static int route_cmp(const route_t *a, const route_t *b)
{
    size_t n = a->rt_nsegs < b->rt_nsegs ? a->rt_nsegs : b->rt_nsegs;
    for (size_t i = 0; i < n; i++) {
        const seg_t *x = &a->rt_segs[i], *y = &b->rt_segs[i];
        int lx = x->sg_param == NULL, ly = y->sg_param == NULL;
        if (lx != ly)
            return lx - ly;
        if (!lx) {
            size_t tx = x->sg_lit_len + x->sg_suffix_len, ty = y->sg_lit_len + y->sg_suffix_len;
            if (tx != ty)
                return tx > ty ? 1 : -1;
        }
    }
    return 0;
}

/* Same method and same shape (literals and parameter positions, names aside). */
static int route_same(const route_t *a, const route_t *b)
{
    if (strcmp(a->rt_method, b->rt_method) != 0 || a->rt_nsegs != b->rt_nsegs)
        return 0;
    for (size_t i = 0; i < a->rt_nsegs; i++) {
        const seg_t *x = &a->rt_segs[i], *y = &b->rt_segs[i];
        if ((x->sg_param == NULL) != (y->sg_param == NULL) || x->sg_lit_len != y->sg_lit_len ||
            memcmp(x->sg_lit, y->sg_lit, x->sg_lit_len) != 0)
            return 0;
        if (x->sg_param && (x->sg_suffix_len != y->sg_suffix_len ||
                            memcmp(x->sg_suffix, y->sg_suffix, x->sg_suffix_len) != 0))
            return 0;
    }
    return 1;
}

static void route_free(route_t *rt)
{
    if (!rt)
        return;
    free(rt->rt_method);
    free(rt->rt_pattern);
    free(rt->rt_buf);
    free(rt->rt_segs);
    free(rt);
}

static int valid_method(const char *m)
{
    if (!m || !*m || strlen(m) > 16)
        return 0;
    for (const char *p = m; *p; p++) {
        if (*p < 'A' || *p > 'Z')
            return 0;
    }
    return 1;
}

/* Parses the pattern into rt->rt_segs. Returns MSM_OK, MSM_ERR_INVALID or MSM_ERR_NOMEM. */
static int route_parse(route_t *rt)
{
    const char *pat = rt->rt_pattern;
    size_t len = strlen(pat);
    span_t sp[MAX_SEGS];
    int n = split_path(pat, len, sp);
    if (n < 0)
        return MSM_ERR_INVALID;
    rt->rt_buf = malloc(len + 2 * (size_t)n + 1);
    rt->rt_segs = calloc((size_t)n, sizeof(seg_t));
    if (!rt->rt_buf || !rt->rt_segs)
        return MSM_ERR_NOMEM;
    char *w = rt->rt_buf;
    size_t nparams = 0;
    for (int i = 0; i < n; i++) {
        seg_t *sg = &rt->rt_segs[i];
        const char *s = sp[i].sp_p;
        size_t sn = sp[i].sp_n;
        const char *open = memchr(s, '{', sn);
        const char *close = memchr(s, '}', sn);
        if (!open && !close) {
            memcpy(w, s, sn);
            w[sn] = '\0';
            sg->sg_lit = w;
            sg->sg_lit_len = sn;
            w += sn + 1;
            continue;
        }
        if (!open || !close || close < open + 2 || memchr(open + 1, '{', (size_t)(close - open)) ||
            memchr(close + 1, '{', sn - (size_t)(close + 1 - s)) ||
            memchr(close + 1, '}', sn - (size_t)(close + 1 - s)))
            return MSM_ERR_INVALID;
        for (const char *p = open + 1; p < close; p++) {
            char c = *p;
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_'))
                return MSM_ERR_INVALID;
        }
        if (++nparams > MSM_HTTP_MAX_PARAMS)
            return MSM_ERR_INVALID;
        size_t pre = (size_t)(open - s), name = (size_t)(close - open - 1);
        size_t suf = sn - (size_t)(close + 1 - s);
        memcpy(w, s, pre);
        w[pre] = '\0';
        sg->sg_lit = w;
        sg->sg_lit_len = pre;
        w += pre + 1;
        memcpy(w, open + 1, name);
        w[name] = '\0';
        sg->sg_param = w;
        w += name + 1;
        memcpy(w, close + 1, suf);
        w[suf] = '\0';
        sg->sg_suffix = w;
        sg->sg_suffix_len = suf;
        w += suf + 1;
    }
    rt->rt_nsegs = (size_t)n;
    return MSM_OK;
}

int msm_http_server_route(msm_http_server_t *srv, const char *method, const char *pattern,
                          msm_http_handler_cb *cb, void *opaque)
{
    if (!srv || !cb || !valid_method(method) || !pattern)
        return MSM_ERR_INVALID;
    int rc = MSM_ERR_NOMEM;
    route_t *rt = calloc(1, sizeof(*rt));
    if (!rt)
        return MSM_ERR_NOMEM;
    rt->rt_method = strdup(method);
    rt->rt_pattern = strdup(pattern);
    if (!rt->rt_method || !rt->rt_pattern)
        goto fail;
    rc = route_parse(rt);
    if (rc != MSM_OK)
        goto fail;
    for (route_t *r = srv->hs_routes; r; r = r->rt_next) {
        if (route_same(r, rt)) {
            rc = MSM_ERR_EXISTS;
            goto fail;
        }
    }
    rt->rt_cb = cb;
    rt->rt_opaque = opaque;
    if (srv->hs_routes_tail)
        srv->hs_routes_tail->rt_next = rt;
    else
        srv->hs_routes = rt;
    srv->hs_routes_tail = rt;
    return MSM_OK;
fail:
    route_free(rt);
    return rc;
}

int msm_http_server_routes(msm_http_server_t *srv, const msm_http_route_t *routes, size_t n,
                           void *opaque)
{
    for (size_t i = 0; i < n; i++) {
        int rc = msm_http_server_route(srv, routes[i].method, routes[i].pattern, routes[i].cb,
                                       opaque);
        if (rc != MSM_OK)
            return rc;
    }
    return MSM_OK;
}

static void append_allow(char *allow, size_t n, const char *m)
{
    size_t l = strlen(allow);
    snprintf(allow + l, n - l, "%s%s", l ? ", " : "", m);
}

/* Picks the route for the request, captures its parameters, or records the error. */
static void resolve(msm_http_server_t *srv, msm_http_req_t *req)
{
    span_t segs[MAX_SEGS];
    int n = split_path(req->rq_path, strlen(req->rq_path), segs);
    route_t *best = NULL;
    for (route_t *r = n < 0 ? NULL : srv->hs_routes; r; r = r->rt_next) {
        if (route_matches(r, segs, n) && (!best || route_cmp(r, best) > 0))
            best = r;
    }
    if (!best) {
        req->rq_err_status = MHD_HTTP_NOT_FOUND;
        req->rq_err_code = "NOT_FOUND";
        req->rq_err_msg = "no such path";
        return;
    }
    route_t *chosen = NULL, *get = NULL;
    int has_head = 0;
    /* Ties in route_cmp() keep the earliest route, so every route of best's shape comes at
     * or after it in registration order. */
    for (route_t *r = best; r; r = r->rt_next) {
        if (!route_matches(r, segs, n) || route_cmp(r, best) != 0)
            continue;
        if (!chosen && strcmp(r->rt_method, req->rq_method) == 0)
            chosen = r;
        if (strcmp(r->rt_method, "GET") == 0)
            get = r;
        if (strcmp(r->rt_method, "HEAD") == 0)
            has_head = 1;
        append_allow(req->rq_allow, sizeof(req->rq_allow), r->rt_method);
    }
    if (!chosen && get && strcmp(req->rq_method, "HEAD") == 0)
        chosen = get;
    if (!chosen) {
        if (get && !has_head)
            append_allow(req->rq_allow, sizeof(req->rq_allow), "HEAD");
        req->rq_route = best;
        req->rq_err_status = MHD_HTTP_METHOD_NOT_ALLOWED;
        req->rq_err_code = "METHOD_NOT_ALLOWED";
        req->rq_err_msg = "method not allowed on this path";
        return;
    }
    req->rq_route = chosen;
    for (int i = 0; i < n; i++) {
        const seg_t *sg = &chosen->rt_segs[i];
        if (!sg->sg_param)
            continue;
        size_t vn = segs[i].sp_n - sg->sg_lit_len - sg->sg_suffix_len;
        char *out = scratch_take(req, vn + 1);
        long dn = out ? pct_decode(segs[i].sp_p + sg->sg_lit_len, vn, out, 1, 0) : -1;
        if (dn < 0) {
            req->rq_err_status = MHD_HTTP_BAD_REQUEST;
            req->rq_err_code = "INVALID_ARGUMENT";
            req->rq_err_msg = "malformed percent-encoding in the path";
            return;
        }
        req->rq_pnames[req->rq_nparams] = sg->sg_param;
        req->rq_pvalues[req->rq_nparams] = out;
        req->rq_nparams++;
    }
}

/* ---- requests ---- */

static msm_http_req_t *req_new(msm_http_server_t *srv, const char *uri)
{
    size_t ulen = strlen(uri);
    msm_http_req_t *req = calloc(1, sizeof(*req) + 2 * (ulen + 1));
    if (!req)
        return NULL;
    req->rq_srv = srv;
    req->rq_start_ns = mono_ns();
    req->rq_state = RQ_HEADERS;
    char *u = req->rq_mem;
    memcpy(u, uri, ulen + 1);
    req->rq_scratch = u + ulen + 1;
    req->rq_scratch_cap = ulen + 1;
    char *q = strchr(u, '?');
    if (q) {
        *q = '\0';
        req->rq_query = q + 1;
    }
    char *fr = strchr(q ? q + 1 : u, '#');
    if (fr)
        *fr = '\0';
    /* absolute-form (GET http://host/path): keep the path only */
    if (u[0] != '/') {
        char *scheme = strstr(u, "://");
        if (scheme) {
            char *slash = strchr(scheme + 3, '/');
            u = slash ? slash : (char *)"/";
        }
    }
    req->rq_path = u;
    srv->hs_live++;
    msm_gauge_inc(srv->hs_inflight);
    return req;
}

static void deferred_remove(msm_http_server_t *srv, msm_http_req_t *req)
{
    if (req->rq_prev)
        req->rq_prev->rq_next = req->rq_next;
    else if (srv->hs_deferred == req)
        srv->hs_deferred = req->rq_next;
    else
        return; /* not listed */
    if (req->rq_next)
        req->rq_next->rq_prev = req->rq_prev;
    req->rq_prev = req->rq_next = NULL;
    srv->hs_ndeferred--;
}

static void deferred_add(msm_http_server_t *srv, msm_http_req_t *req)
{
    req->rq_prev = NULL;
    req->rq_next = srv->hs_deferred;
    if (srv->hs_deferred)
        srv->hs_deferred->rq_prev = req;
    srv->hs_deferred = req;
    srv->hs_ndeferred++;
}

/* ---- the request deadline ---- */

static void sweep(msm_loop_t *loop, void *opaque);

static void arm_sweep(msm_http_server_t *srv)
{
    if (!srv->hs_arriving || msm_timer_active(&srv->hs_sweep))
        return;
    uint64_t due = srv->hs_arriving->ar_since_ns + srv->hs_deadline_ns, now = mono_ns();
    uint64_t ms = due > now ? (due - now + 999999u) / 1000000u : 0;
    msm_loop_timer_start(srv->hs_loop, &srv->hs_sweep, ms, sweep, srv);
}

/* Lists @p ar (since "now": the list stays ordered by time). */
static void arriving_add(msm_http_server_t *srv, arrival_t *ar, struct MHD_Connection *conn,
                         uint64_t since_ns)
{
    ar->ar_conn = conn;
    ar->ar_since_ns = since_ns;
    ar->ar_listed = 1;
    ar->ar_next = NULL;
    ar->ar_prev = srv->hs_arriving_tail;
    if (srv->hs_arriving_tail)
        srv->hs_arriving_tail->ar_next = ar;
    else
        srv->hs_arriving = ar;
    srv->hs_arriving_tail = ar;
    arm_sweep(srv);
}

/* Its request line or its whole request is in (or it is being answered, or it ended): no
 * deadline any more. */
static void arriving_remove(msm_http_server_t *srv, arrival_t *ar)
{
    if (!ar->ar_listed)
        return;
    ar->ar_listed = 0;
    if (ar->ar_prev)
        ar->ar_prev->ar_next = ar->ar_next;
    else
        srv->hs_arriving = ar->ar_next;
    if (ar->ar_next)
        ar->ar_next->ar_prev = ar->ar_prev;
    else
        srv->hs_arriving_tail = ar->ar_prev;
    ar->ar_prev = ar->ar_next = NULL;
}

static void format_addr(struct MHD_Connection *conn, char *out, size_t n);

/* Drops every connection and request past its deadline. shutdown() rather than close():
 * libmicrohttpd still owns the fd; it sees the end of the stream on its next run and closes
 * the connection cleanly (on_completed() ends a request, on_connection() the rest). */
static void sweep(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    msm_http_server_t *srv = opaque;
    uint64_t now = mono_ns();
    while (srv->hs_arriving && now - srv->hs_arriving->ar_since_ns >= srv->hs_deadline_ns) {
        arrival_t *ar = srv->hs_arriving;
        arriving_remove(srv, ar);
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(ar->ar_conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        char addr[64];
        format_addr(ar->ar_conn, addr, sizeof(addr));
        msm_log(MSM_LOG_INFO, FAC, "%s: dropped a connection from %s: its request still "
                "arriving after %llu ms", srv->hs_name, addr,
                (unsigned long long)(srv->hs_deadline_ns / 1000000u));
        if (ci)
            shutdown(ci->connect_fd, SHUT_RDWR);
        msm_counter_inc(srv->hs_dropped_deadline);
        srv->hs_need_run = 1;
    }
    arm_sweep(srv);
}

static void req_free(msm_http_req_t *req)
{
    msm_http_server_t *srv = req->rq_srv;
    deferred_remove(srv, req);
    arriving_remove(srv, &req->rq_arrival);
    if (req->rq_resp)
        MHD_destroy_response(req->rq_resp);
    for (size_t i = 0; i < req->rq_nhdrs; i++) {
        free(req->rq_hdrs[i].h_name);
        free(req->rq_hdrs[i].h_value);
    }
    free(req->rq_hdrs);
    free(req->rq_qs);
    free(req->rq_body);
    free(req->rq_subject);
    srv->hs_live--;
    msm_gauge_dec(srv->hs_inflight);
    free(req);
}

/* ---- TLS client certificates ---- */

/* Verifies the client certificate of @p conn against the client CA and copies its subject
 * CN into *cn (NULL when it has none usable). Returns 0 when a certificate verified, -1
 * when there is none or it did not. MHD only asks for one, so refusing is ours to do. */
static int client_cert(struct MHD_Connection *conn, char **cn)
{
    *cn = NULL;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    if (!ci || !ci->tls_session)
        return -1;
    gnutls_session_t session = ci->tls_session;
    unsigned status = 0, ncerts = 0;
    if (gnutls_certificate_verify_peers2(session, &status) != GNUTLS_E_SUCCESS || status != 0)
        return -1;
    const gnutls_datum_t *certs = gnutls_certificate_get_peers(session, &ncerts);
    if (!certs || ncerts == 0)
        return -1;
    gnutls_x509_crt_t crt;
    if (gnutls_x509_crt_init(&crt) != GNUTLS_E_SUCCESS)
        return 0;
    char buf[256];
    size_t len = sizeof(buf);
    if (gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) == GNUTLS_E_SUCCESS &&
        gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, buf, &len) ==
            GNUTLS_E_SUCCESS &&
        len < sizeof(buf) && !memchr(buf, '\0', len))
        *cn = strndup(buf, len); /* a CN with a NUL inside names nobody */
    gnutls_x509_crt_deinit(crt);
    return 0;
}

/* With a client CA, a request without a verified certificate is marked for a 401, answered
 * like a 404 once its body is drained (health probes stay open: they carry no certificate).
 * Checked per request: the verdict costs one chain verification, no connection state. */
static void check_client_cert(msm_http_server_t *srv, msm_http_req_t *req)
{
    if (!srv->hs_tls_verify)
        return;
    if (client_cert(req->rq_conn, &req->rq_subject) == 0 ||
        strcmp(req->rq_path, "/healthz") == 0 || strcmp(req->rq_path, "/readyz") == 0)
        return;
    req->rq_err_status = MHD_HTTP_UNAUTHORIZED;
    req->rq_err_code = "UNAUTHENTICATED";
    req->rq_err_msg = "a client certificate signed by the server's client CA is required";
}

const char *msm_http_req_client_subject(const msm_http_req_t *req)
{
    return req->rq_subject;
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    /* NULL (out of memory) is survivable: on_access() notices and closes the connection. */
    msm_http_req_t *req = req_new(cls, uri);
    if (req) {
        req->rq_conn = conn;
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        if (ci && ci->socket_context)
            arriving_remove(cls, ci->socket_context); /* the connection's wait is over */
        arriving_add(cls, &req->rq_arrival, conn, req->rq_start_ns);
        check_client_cert(cls, req);
    }
    return req;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls, (void)conn;
    msm_http_req_t *req = *con_cls;
    if (!req)
        return;
    *con_cls = NULL;
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && req->rq_state != RQ_HEADERS)
        msm_log(MSM_LOG_DEBUG, FAC, "%s %s: connection ended early (%d)",
                req->rq_method ? req->rq_method : "-", req->rq_path, (int)toe);
    req_free(req);
}

const char *msm_http_req_method(const msm_http_req_t *req)
{
    return req->rq_method;
}

const char *msm_http_req_path(const msm_http_req_t *req)
{
    return req->rq_path;
}

const char *msm_http_req_route(const msm_http_req_t *req)
{
    return req->rq_route ? req->rq_route->rt_pattern : NULL;
}

const char *msm_http_req_param(const msm_http_req_t *req, const char *name)
{
    for (size_t i = 0; i < req->rq_nparams; i++) {
        if (strcmp(req->rq_pnames[i], name) == 0)
            return req->rq_pvalues[i];
    }
    return NULL;
}

static void parse_query(msm_http_req_t *req)
{
    req->rq_qs_parsed = 1;
    const char *q = req->rq_query;
    if (!q || !*q)
        return;
    size_t n = 1;
    for (const char *p = q; *p; p++)
        n += *p == '&';
    req->rq_qs = calloc(n, sizeof(kv_t));
    if (!req->rq_qs)
        return;
    while (*q) {
        const char *amp = strchr(q, '&');
        size_t len = amp ? (size_t)(amp - q) : strlen(q);
        if (len > 0) {
            const char *eq = memchr(q, '=', len);
            size_t kl = eq ? (size_t)(eq - q) : len;
            size_t vl = eq ? len - kl - 1 : 0;
            /* key and value together never exceed the pair's length + 1 */
            char *k = scratch_take(req, kl + 1);
            char *v = k ? scratch_take(req, vl + 1) : NULL;
            if (!v)
                return;
            pct_decode(q, kl, k, 0, 1);
            pct_decode(eq ? eq + 1 : q + len, vl, v, 0, 1);
            req->rq_qs[req->rq_nqs].kv_key = k;
            req->rq_qs[req->rq_nqs].kv_value = v;
            req->rq_nqs++;
        }
        if (!amp)
            break;
        q = amp + 1;
    }
}

const char *msm_http_req_query(msm_http_req_t *req, const char *name)
{
    if (!req->rq_qs_parsed)
        parse_query(req);
    for (size_t i = 0; i < req->rq_nqs; i++) {
        if (strcmp(req->rq_qs[i].kv_key, name) == 0)
            return req->rq_qs[i].kv_value;
    }
    return NULL;
}

const char *msm_http_req_header(const msm_http_req_t *req, const char *name)
{
    return MHD_lookup_connection_value(req->rq_conn, MHD_HEADER_KIND, name);
}

typedef struct {
    msm_http_header_cb *hv_cb;
    void *hv_opaque;
    size_t hv_count;
} header_visit_t;

static enum MHD_Result visit_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
    (void)kind;
    header_visit_t *v = cls;
    v->hv_count++;
    return v->hv_cb(v->hv_opaque, key, value ? value : "") == 0 ? MHD_YES : MHD_NO;
}

size_t msm_http_req_headers(const msm_http_req_t *req, msm_http_header_cb *cb, void *opaque)
{
    header_visit_t v = {cb, opaque, 0};
    MHD_get_connection_values(req->rq_conn, MHD_HEADER_KIND, visit_header, &v);
    return v.hv_count;
}

const char *msm_http_req_body(const msm_http_req_t *req, size_t *len)
{
    if (len)
        *len = req->rq_body_len;
    return req->rq_body ? req->rq_body : "";
}

/* The client's address of @p conn as "1.2.3.4:5678" or "[::1]:5678". */
static void format_addr(struct MHD_Connection *conn, char *out, size_t n)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0, v6 = 0;
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET) {
            const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
            inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
            port = ntohs(in->sin_port);
        } else if (sa->sa_family == AF_INET6) {
            const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
            inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
            port = ntohs(in6->sin6_port);
            v6 = 1;
        }
    }
    snprintf(out, n, v6 ? "[%s]:%d" : "%s:%d", host, port);
}

const char *msm_http_req_remote_addr(msm_http_req_t *req)
{
    if (!req->rq_remote[0])
        format_addr(req->rq_conn, req->rq_remote, sizeof(req->rq_remote));
    return req->rq_remote;
}

msm_http_server_t *msm_http_req_server(const msm_http_req_t *req)
{
    return req->rq_srv;
}

void msm_http_req_on_cancel(msm_http_req_t *req, msm_http_cancel_cb *cb, void *opaque)
{
    req->rq_cancel_cb = cb;
    req->rq_cancel_opaque = opaque;
}

/* ---- responses ---- */

static int can_respond(const msm_http_req_t *req)
{
    return req->rq_state == RQ_HANDLER || req->rq_state == RQ_DEFERRED;
}

int msm_http_add_header(msm_http_req_t *req, const char *name, const char *value)
{
    if (!can_respond(req) || !name || !*name || !value || strpbrk(name, "\r\n: ") ||
        strpbrk(value, "\r\n"))
        return MSM_ERR_INVALID;
    hdr_t *h = realloc(req->rq_hdrs, (req->rq_nhdrs + 1) * sizeof(*h));
    if (!h)
        return MSM_ERR_NOMEM;
    req->rq_hdrs = h;
    h[req->rq_nhdrs].h_name = strdup(name);
    h[req->rq_nhdrs].h_value = strdup(value);
    if (!h[req->rq_nhdrs].h_name || !h[req->rq_nhdrs].h_value) {
        free(h[req->rq_nhdrs].h_name);
        free(h[req->rq_nhdrs].h_value);
        return MSM_ERR_NOMEM;
    }
    req->rq_nhdrs++;
    return MSM_OK;
}

static void observe(msm_http_server_t *srv, msm_http_req_t *req, int status)
{
    route_t *rt = req->rq_route ? req->rq_route : &srv->hs_unmatched;
    double secs = (double)(mono_ns() - req->rq_start_ns) / 1e9;
    if (!rt->rt_hist)
        rt->rt_hist = msm_metric_labels(srv->hs_m_duration, rt->rt_pattern, NULL);
    msm_histogram_observe(rt->rt_hist, secs);

    msm_metric_child_t *c = NULL;
    for (size_t i = 0; i < rt->rt_nmcache; i++) {
        if (rt->rt_mcache[i].mc_method == req->rq_method_idx &&
            rt->rt_mcache[i].mc_status == status) {
            c = rt->rt_mcache[i].mc_child;
            break;
        }
    }
    if (!c) {
        char code[8];
        snprintf(code, sizeof(code), "%d", status);
        const char *m = req->rq_method_idx < NMETHODS ? methods[req->rq_method_idx] : "OTHER";
        c = msm_metric_labels(srv->hs_m_requests, m, rt->rt_pattern, code, NULL);
        if (c && rt->rt_nmcache < METRIC_CACHE) {
            rt->rt_mcache[rt->rt_nmcache++] = (mcache_t){req->rq_method_idx, status, c};
        }
    }
    msm_counter_inc(c);
    msm_log(MSM_LOG_DEBUG, FAC, "%s %s -> %d (%.3f ms)", req->rq_method, req->rq_path, status,
            secs * 1e3);
}

/* The handler set response header @p name already. */
static int has_header(const msm_http_req_t *req, const char *name)
{
    for (size_t i = 0; i < req->rq_nhdrs; i++)
        if (strcasecmp(req->rq_hdrs[i].h_name, name) == 0)
            return 1;
    return 0;
}

/* How long ago the connection of @p req was accepted (on_connection() noted it). */
static uint64_t connection_age_ns(const msm_http_req_t *req)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(req->rq_conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    const arrival_t *ar = ci ? ci->socket_context : NULL;
    return ar ? mono_ns() - ar->ar_since_ns : 0;
}

/* A new connection's socket context notes when it opened and lists it until its first
 * request line arrives (a client trickling that line, or the TLS handshake, is dropped at
 * the deadline too). Out of memory: no age, no deadline, but served. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    msm_http_server_t *srv = cls;
    arrival_t *ar = *socket_context;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        ar = calloc(1, sizeof(*ar));
        if (ar)
            arriving_add(srv, ar, conn, mono_ns());
        *socket_context = ar;
    } else if (ar) {
        arriving_remove(srv, ar);
        free(ar);
        *socket_context = NULL;
    }
}

/* Sends or stores @p resp (NULL: could not build one; the connection will be closed). */
static int finish(msm_http_req_t *req, int status, const char *content_type,
                  struct MHD_Response *resp)
{
    msm_http_server_t *srv = req->rq_srv;
    if (resp) {
        if (content_type)
            MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
        for (size_t i = 0; i < req->rq_nhdrs; i++)
            MHD_add_response_header(resp, req->rq_hdrs[i].h_name, req->rq_hdrs[i].h_value);
    }
    if (resp && srv->hs_max_conn_age_ns && !has_header(req, MHD_HTTP_HEADER_CONNECTION) &&
        connection_age_ns(req) > srv->hs_max_conn_age_ns)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    observe(srv, req, status);
    if (req->rq_state == RQ_HANDLER) {
        req->rq_state = RQ_DONE;
        if (!resp || MHD_queue_response(req->rq_conn, (unsigned)status, resp) != MHD_YES)
            req->rq_queue_failed = 1;
        if (resp)
            MHD_destroy_response(resp);
        return resp ? MSM_OK : MSM_ERR_NOMEM;
    }
    /* Deferred: MHD takes the answer when it calls on_access() for the resumed connection. */
    deferred_remove(srv, req);
    req->rq_resp = resp;
    req->rq_status = status;
    req->rq_state = RQ_READY;
    MHD_resume_connection(req->rq_conn);
    srv->hs_need_run = 1;
    return resp ? MSM_OK : MSM_ERR_NOMEM;
}

static int respond_take(msm_http_req_t *req, int status, const char *content_type, char *body,
                        size_t len)
{
    if (!can_respond(req) || status < 200 || status > 999) {
        free(body);
        msm_log(MSM_LOG_WARN, FAC, "%s %s: invalid response (status %d, %s)", req->rq_method,
                req->rq_path, status, can_respond(req) ? "ok state" : "already answered");
        return MSM_ERR_INVALID;
    }
    struct MHD_Response *resp = NULL;
    if (body)
        resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp)
        free(body);
    return finish(req, status, content_type, resp);
}

int msm_http_respond(msm_http_req_t *req, int status, const char *content_type,
                     const void *body, size_t len)
{
    if (!can_respond(req) || status < 200 || status > 999)
        return respond_take(req, status, content_type, NULL, 0);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)(body ? body : ""), MHD_RESPMEM_MUST_COPY);
    return finish(req, status, content_type, resp);
}

int msm_http_respond_json(msm_http_req_t *req, int status, json_t *body)
{
    size_t len = 0;
    char *s = body ? msm_json_dump(body, &len) : NULL;
    json_decref(body);
    return respond_take(req, status, "application/json", s, len);
}

int msm_http_respond_error(msm_http_req_t *req, int status, const char *code,
                           const char *message, json_t *details)
{
    return msm_http_respond_json(req, status, msm_json_error_body(code, message, details));
}

/* ---- the MHD access handler ---- */

static enum MHD_Result answer_now(msm_http_req_t *req, int status, const char *code,
                                  const char *msg)
{
    arriving_remove(req->rq_srv, &req->rq_arrival);
    req->rq_state = RQ_HANDLER;
    req->rq_in_handler = 1;
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        msm_http_add_header(req, MHD_HTTP_HEADER_ALLOW, req->rq_allow);
    msm_http_respond_error(req, status, code, msg, NULL);
    req->rq_in_handler = 0;
    return req->rq_queue_failed ? MHD_NO : MHD_YES;
}

static void too_large_msg(msm_http_server_t *srv, char *buf, size_t n)
{
    snprintf(buf, n, "request body exceeds the limit of %zu bytes", srv->hs_max_body);
}

/* Asks the guard, once the headers are in and before any body is kept: a refused request
 * is answered its 401/403 after the body is drained (or at once, as for 413). */
static void guard(msm_http_server_t *srv, msm_http_req_t *req)
{
    if (!srv->hs_guard || !req->rq_route || req->rq_err_status)
        return;
    req->rq_err_buf[0] = '\0';
    /* As a handler would, the guard may add headers to its refusal (WWW-Authenticate). */
    rq_state_t state = req->rq_state;
    req->rq_state = RQ_HANDLER;
    int status = srv->hs_guard(req, req->rq_route->rt_pattern, srv->hs_guard_opaque,
                               req->rq_err_buf, sizeof(req->rq_err_buf));
    req->rq_state = state;
    if (status == 0)
        return;
    req->rq_err_status = status;
    req->rq_err_code = status == 401 ? "UNAUTHENTICATED"
                                     : (status == 429 ? "RATE_LIMITED" : "PERMISSION_DENIED");
    req->rq_err_msg = req->rq_err_buf[0] ? req->rq_err_buf : "not allowed";
}

static enum MHD_Result on_headers(msm_http_server_t *srv, msm_http_req_t *req,
                                  struct MHD_Connection *conn, const char *method)
{
    req->rq_conn = conn;
    req->rq_method = method;
    req->rq_method_idx = method_index(method);
    req->rq_state = RQ_BODY;
    resolve(srv, req);
    guard(srv, req);

    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(cl, &end, 10);
        if (errno == 0 && end != cl && v > srv->hs_max_body) {
            const char *expect =
                MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
            /* Answer now when the client waits for "100 Continue" (nothing to drain) or the
             * body is too big to drain; MHD then closes the connection after the answer. */
            if ((expect && strcasecmp(expect, "100-continue") == 0) ||
                v > srv->hs_max_body + DISCARD_MAX) {
                char msg[96];
                too_large_msg(srv, msg, sizeof(msg));
                return answer_now(req, MHD_HTTP_CONTENT_TOO_LARGE, "PAYLOAD_TOO_LARGE", msg);
            }
            req->rq_discard = 1;
        } else if (errno == 0 && end != cl && v > 0) {
            req->rq_body = malloc((size_t)v + 1);
            if (!req->rq_body)
                return MHD_NO;
            req->rq_body_cap = (size_t)v + 1;
        }
    }
    return MHD_YES;
}

static enum MHD_Result on_body(msm_http_server_t *srv, msm_http_req_t *req, const char *data,
                               size_t n)
{
    req->rq_body_seen += n;
    if (req->rq_body_seen > srv->hs_max_body) {
        if (!req->rq_discard) {
            req->rq_discard = 1;
            free(req->rq_body);
            req->rq_body = NULL;
            req->rq_body_len = req->rq_body_cap = 0;
        }
        /* Hang up on a client that keeps sending far past the limit. */
        return req->rq_body_seen > srv->hs_max_body + DISCARD_MAX ? MHD_NO : MHD_YES;
    }
    if (req->rq_discard || req->rq_err_status)
        return MHD_YES; /* the answer is an error: nothing to keep */
    if (req->rq_body_len + n + 1 > req->rq_body_cap) {
        size_t cap = req->rq_body_cap ? req->rq_body_cap : 4096;
        while (cap < req->rq_body_len + n + 1)
            cap *= 2;
        if (cap > srv->hs_max_body + 1)
            cap = srv->hs_max_body + 1;
        char *p = realloc(req->rq_body, cap);
        if (!p)
            return MHD_NO;
        req->rq_body = p;
        req->rq_body_cap = cap;
    }
    memcpy(req->rq_body + req->rq_body_len, data, n);
    req->rq_body_len += n;
    req->rq_body[req->rq_body_len] = '\0';
    return MHD_YES;
}

static enum MHD_Result dispatch(msm_http_server_t *srv, msm_http_req_t *req)
{
    if (req->rq_discard) {
        char msg[96];
        too_large_msg(srv, msg, sizeof(msg));
        return answer_now(req, MHD_HTTP_CONTENT_TOO_LARGE, "PAYLOAD_TOO_LARGE", msg);
    }
    if (req->rq_err_status)
        return answer_now(req, req->rq_err_status, req->rq_err_code, req->rq_err_msg);
    if (srv->hs_stopping)
        return answer_now(req, MHD_HTTP_SERVICE_UNAVAILABLE, "SHUTTING_DOWN",
                          "the server is shutting down");
    req->rq_state = RQ_HANDLER;
    req->rq_in_handler = 1;
    req->rq_route->rt_cb(req, req->rq_route->rt_opaque);
    req->rq_in_handler = 0;
    if (req->rq_state == RQ_DONE)
        return req->rq_queue_failed ? MHD_NO : MHD_YES;
    req->rq_state = RQ_DEFERRED;
    deferred_add(srv, req);
    MHD_suspend_connection(req->rq_conn);
    return MHD_YES;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *data,
                                 size_t *data_size, void **con_cls)
{
    (void)url, (void)version;
    msm_http_server_t *srv = cls;
    msm_http_req_t *req = *con_cls;
    if (!req)
        return MHD_NO; /* on_uri() ran out of memory */
    switch (req->rq_state) {
    case RQ_HEADERS:
        return on_headers(srv, req, conn, method);
    case RQ_BODY:
        if (*data_size) {
            enum MHD_Result r = on_body(srv, req, data, *data_size);
            *data_size = 0;
            return r;
        }
        arriving_remove(srv, &req->rq_arrival);
        return dispatch(srv, req);
    case RQ_READY: {
        struct MHD_Response *resp = req->rq_resp;
        req->rq_resp = NULL;
        req->rq_state = RQ_DONE;
        if (!resp)
            return MHD_NO;
        enum MHD_Result r = MHD_queue_response(conn, (unsigned)req->rq_status, resp);
        MHD_destroy_response(resp);
        return r;
    }
    case RQ_HANDLER:
    case RQ_DEFERRED:
    case RQ_DONE:
        break;
    }
    return MHD_YES;
}

/* ---- built-in endpoints ---- */

static void h_healthz(msm_http_req_t *req, void *opaque)
{
    (void)opaque;
    msm_http_respond_json(req, 200, json_pack("{s:s}", "status", "ok"));
}

static void h_readyz(msm_http_req_t *req, void *opaque)
{
    msm_http_server_t *srv = opaque;
    char why[256] = "";
    if (srv->hs_quiesced || srv->hs_stopping) {
        msm_http_respond_error(req, 503, "SHUTTING_DOWN", "the server is shutting down", NULL);
        return;
    }
    if (srv->hs_ready && !srv->hs_ready(srv->hs_ready_opaque, why, sizeof(why))) {
        why[sizeof(why) - 1] = '\0';
        msm_http_respond_error(req, 503, "NOT_READY", why[0] ? why : "not ready", NULL);
        return;
    }
    msm_http_respond_json(req, 200, json_pack("{s:s}", "status", "ready"));
}

static void h_metrics(msm_http_req_t *req, void *opaque)
{
    msm_http_server_t *srv = opaque;
    size_t len = 0;
    char *text = msm_metrics_render(srv->hs_metrics, &len);
    if (!text) {
        msm_http_respond_error(req, 500, "INTERNAL", "out of memory", NULL);
        return;
    }
    respond_take(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
}

static void h_debug_info(msm_http_req_t *req, void *opaque)
{
    msm_http_server_t *srv = opaque;
    json_int_t uptime = (json_int_t)((mono_ns() - srv->hs_started_ns) / 1000000000u);
    msm_http_respond_json(req, 200,
                          json_pack("{s:s,s:s,s:s,s:O?,s:I,s:I}", "name", srv->hs_name,
                                    "version", msm_version(), "git_sha", msm_git_sha(), "config",
                                    srv->hs_config, "uptime_s", uptime, "pid",
                                    (json_int_t)getpid()));
}

/* ---- server ---- */

void msm_http_server_conf_init(msm_http_server_conf_t *conf)
{
    memset(conf, 0, sizeof(*conf));
}

/* The local port of socket @p fd. */
static int socket_port(int fd, uint16_t *port, char *errbuf, size_t n)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
        snprintf(errbuf, n, "getsockname: %s", strerror(errno));
        return -1;
    }
    if (ss.ss_family == AF_INET6)
        *port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    else
        *port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return 0;
}

int msm_http_listen(const char *host, int port, int reuse_port, uint16_t *bound, char *errbuf,
                    size_t n)
{
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%d", port);
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0) {
        snprintf(errbuf, n, "resolve %s: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = -1, err = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (reuse_port)
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 1024) == 0)
            break;
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        snprintf(errbuf, n, "bind %s:%d: %s", host, port, strerror(err));
        return -1;
    }
    if (socket_port(fd, bound, errbuf, n) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int register_metrics(msm_http_server_t *srv)
{
    static const char *const req_labels[] = {"method", "route", "code", NULL};
    static const char *const dur_labels[] = {"route", NULL};
    static const char *const drop_labels[] = {"reason", NULL};
    msm_metric_t *inflight = NULL, *dropped = NULL;
    if (msm_metrics_counter(srv->hs_metrics, "msm_http_requests_dropped_total",
                            "HTTP requests dropped without an answer, by reason (deadline: "
                            "headers or body still arriving after the request deadline).",
                            drop_labels, &dropped) != MSM_OK ||
        msm_metrics_counter(srv->hs_metrics, "msm_http_requests_total",
                            "HTTP requests answered, by method, route pattern and status.",
                            req_labels, &srv->hs_m_requests) != MSM_OK ||
        msm_metrics_histogram(srv->hs_metrics, "msm_http_request_duration_seconds",
                              "Time from request line to response, by route pattern.",
                              dur_labels, NULL, 0, &srv->hs_m_duration) != MSM_OK ||
        msm_metrics_gauge(srv->hs_metrics, "msm_http_requests_in_flight",
                          "HTTP requests received and not yet completed.", NULL,
                          &inflight) != MSM_OK)
        return -1;
    srv->hs_inflight = msm_metric_solo(inflight);
    srv->hs_dropped_deadline = msm_metric_labels(dropped, "deadline", NULL);
    return 0;
}

/* The whole of a PEM file, NUL-terminated, or NULL with a reason in @p errbuf. */
static char *read_pem(const char *what, const char *path, char *errbuf, size_t n)
{
    msm_buf_t b = {0};
    int rc = msm_buf_append_file(&b, path);
    if (rc != MSM_OK) {
        snprintf(errbuf, n, "%s %s: %s", what, path,
                 rc == MSM_ERR_NOMEM ? "out of memory" : strerror(errno));
        msm_buf_deinit(&b);
        return NULL;
    }
    return (char *)b.data;
}

static int has_text(const char *s)
{
    return s && *s;
}

/* Reads the TLS files of @p conf and fills @p opts (room for 4) with the MHD options, or
 * leaves it empty for plain HTTP. */
static int tls_setup(msm_http_server_t *srv, const msm_http_server_conf_t *conf,
                     struct MHD_OptionItem *opts, char *errbuf, size_t n)
{
    static const enum MHD_OPTION kinds[] = {MHD_OPTION_HTTPS_MEM_CERT, MHD_OPTION_HTTPS_MEM_KEY,
                                            MHD_OPTION_HTTPS_MEM_TRUST};
    static const char *const names[] = {"tls.cert", "tls.key", "tls.client_ca"};
    const char *paths[] = {conf->tls_cert_file, conf->tls_key_file, conf->tls_client_ca_file};
    opts[0] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    if (!has_text(paths[0]) && !has_text(paths[1]) && !has_text(paths[2]))
        return 0;
    if (!has_text(paths[0]) || !has_text(paths[1])) {
        snprintf(errbuf, n, "TLS needs both tls.cert and tls.key");
        return -1;
    }
    if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
        snprintf(errbuf, n, "TLS is configured but this libmicrohttpd was built without it");
        return -1;
    }
    size_t k = 0;
    for (size_t i = 0; i < 3; i++) {
        if (!has_text(paths[i]))
            continue;
        srv->hs_tls_pem[i] = read_pem(names[i], paths[i], errbuf, n);
        if (!srv->hs_tls_pem[i])
            return -1;
        opts[k++] = (struct MHD_OptionItem){kinds[i], 0, srv->hs_tls_pem[i]};
    }
    opts[k] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    srv->hs_tls_verify = srv->hs_tls_pem[2] != NULL;
    return 0;
}

msm_http_server_t *msm_http_server_new(msm_loop_t *loop, const msm_http_server_conf_t *conf,
                                       char *errbuf, size_t errbuf_size)
{
    char dummy[1];
    if (!errbuf || errbuf_size == 0) {
        errbuf = dummy;
        errbuf_size = sizeof(dummy);
    }
    errbuf[0] = '\0';
    int lfd = -1;
    msm_http_server_t *srv = NULL;
    if (!loop || !conf || conf->port < 0 || conf->port > 65535) {
        snprintf(errbuf, errbuf_size, "invalid arguments (port must be 0..65535)");
        return NULL;
    }
    srv = calloc(1, sizeof(*srv));
    if (!srv)
        goto nomem;
    srv->hs_loop = loop;
    srv->hs_epfd = -1;
    msm_timer_init(&srv->hs_timer);
    msm_timer_init(&srv->hs_sweep);
    srv->hs_started_ns = mono_ns();
    srv->hs_max_body = conf->max_body_bytes ? conf->max_body_bytes : MSM_HTTP_DEFAULT_MAX_BODY;
    srv->hs_name = strdup(conf->name ? conf->name : "msm");
    srv->hs_ready = conf->ready;
    srv->hs_ready_opaque = conf->ready_opaque;
    srv->hs_unmatched.rt_pattern = (char *)"unmatched";
    if (!srv->hs_name)
        goto nomem;
    if (conf->config) {
        srv->hs_config = json_deep_copy(conf->config);
        if (!srv->hs_config)
            goto nomem;
    }
    if (conf->metrics) {
        srv->hs_metrics = conf->metrics;
    } else {
        srv->hs_metrics = msm_metrics_new();
        srv->hs_own_metrics = 1;
        if (!srv->hs_metrics)
            goto nomem;
    }
    if (register_metrics(srv) != 0) {
        snprintf(errbuf, errbuf_size, "cannot register the HTTP metrics (name clash?)");
        goto fail;
    }
    static const msm_http_route_t builtin[] = {
        {"GET", "/healthz", h_healthz},
        {"GET", "/readyz", h_readyz},
        {"GET", "/metrics", h_metrics},
        {"GET", "/debug/info", h_debug_info},
    };
    if (msm_http_server_routes(srv, builtin, sizeof(builtin) / sizeof(builtin[0]), srv) != MSM_OK)
        goto nomem;

    const char *host = conf->bind_address ? conf->bind_address : "0.0.0.0";
    if (conf->listen_fd > 0) {
        lfd = conf->listen_fd;
        if (socket_port(lfd, &srv->hs_port, errbuf, errbuf_size) != 0)
            goto fail;
    } else {
        lfd = msm_http_listen(host, conf->port, 0, &srv->hs_port, errbuf, errbuf_size);
        if (lfd < 0)
            goto fail;
    }
    srv->hs_max_conn_age_ns = (uint64_t)conf->max_connection_age_ms * 1000000u;
    srv->hs_deadline_ns = (uint64_t)(conf->request_deadline_ms
                                         ? conf->request_deadline_ms
                                         : MSM_HTTP_DEFAULT_REQUEST_DEADLINE_MS) *
                          1000000u;

    struct MHD_OptionItem tls_opts[4];
    unsigned tls_flag = 0;
    if (tls_setup(srv, conf, tls_opts, errbuf, errbuf_size) != 0)
        goto fail;
    if (tls_opts[0].option != MHD_OPTION_END)
        tls_flag = MHD_USE_TLS;

    unsigned max_conns = conf->max_connections ? conf->max_connections : 1024;
    unsigned idle = conf->idle_timeout_s ? conf->idle_timeout_s : 60;
    /* No internal thread: MHD_USE_EPOLL gives us one fd to watch. Suspend/resume (which
     * implies MHD_USE_ITC) lets handlers answer later. MHD_USE_TURBO is left out: it skips
     * shutdown() before close, and its optimistic reads gain little here. */
    srv->hs_mhd = MHD_start_daemon(
        MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC | MHD_USE_ERROR_LOG | tls_flag,
        srv->hs_port, NULL, NULL, on_access, srv, MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, srv,
        MHD_OPTION_LISTEN_SOCKET, lfd, MHD_OPTION_URI_LOG_CALLBACK, on_uri, srv,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_NOTIFY_CONNECTION,
        on_connection, srv, MHD_OPTION_CONNECTION_LIMIT, max_conns,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, conf->max_connections_per_ip,
        MHD_OPTION_CONNECTION_TIMEOUT, idle, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        CONNECTION_MEMORY, MHD_OPTION_ARRAY, tls_opts, MHD_OPTION_END);
    if (!srv->hs_mhd) {
        snprintf(errbuf, errbuf_size, tls_flag ? "MHD_start_daemon failed (are tls.cert and "
                                                 "tls.key a PEM certificate and its key?)"
                                               : "MHD_start_daemon failed");
        goto fail;
    }
    lfd = -1; /* MHD owns it now */
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->hs_mhd, MHD_DAEMON_INFO_EPOLL_FD);
    if (!info || info->epoll_fd < 0) {
        snprintf(errbuf, errbuf_size, "libmicrohttpd has no epoll fd");
        goto fail;
    }
    srv->hs_epfd = info->epoll_fd;
    if (msm_loop_watch(loop, srv->hs_epfd, MSM_LOOP_READ, on_epoll, srv) != MSM_OK) {
        snprintf(errbuf, errbuf_size, "cannot watch the libmicrohttpd epoll fd");
        goto fail;
    }
    if (msm_loop_add_before_sleep(loop, before_sleep, srv) != MSM_OK)
        goto nomem;
    srv->hs_hook_added = 1;
    arm_timer(srv);
    msm_log(MSM_LOG_INFO, FAC, "%s listening on %s:%u%s", srv->hs_name, host,
            (unsigned)srv->hs_port,
            tls_flag ? (srv->hs_tls_verify ? " (https, client certificates required)" : " (https)")
                     : "");
    return srv;
nomem:
    snprintf(errbuf, errbuf_size, "out of memory");
fail:
    if (lfd >= 0)
        close(lfd);
    msm_http_server_free(srv);
    return NULL;
}

int msm_http_server_quiesce(msm_http_server_t *srv)
{
    if (srv->hs_quiesced)
        return MSM_OK;
    MHD_socket fd = MHD_quiesce_daemon(srv->hs_mhd);
    if (fd == MHD_INVALID_SOCKET)
        return MSM_ERR_IO;
    close(fd);
    srv->hs_quiesced = 1;
    msm_log(MSM_LOG_INFO, FAC, "%s: no longer accepting connections", srv->hs_name);
    return MSM_OK;
}

void msm_http_server_free(msm_http_server_t *srv)
{
    if (!srv)
        return;
    if (srv->hs_mhd) {
        srv->hs_stopping = 1;
        msm_http_server_quiesce(srv);
        /* Deferred requests: tell their owners, then answer 503 ourselves. */
        while (srv->hs_deferred) {
            msm_http_req_t *req = srv->hs_deferred;
            if (req->rq_cancel_cb)
                req->rq_cancel_cb(req, req->rq_cancel_opaque);
            if (srv->hs_deferred == req && req->rq_state == RQ_DEFERRED)
                msm_http_respond_error(req, 503, "SHUTTING_DOWN", "the server is shutting down",
                                       NULL);
            if (srv->hs_deferred == req) { /* could not answer: resume it anyway */
                deferred_remove(srv, req);
                req->rq_state = RQ_READY;
                MHD_resume_connection(req->rq_conn);
            }
        }
        /* Give the answers a moment to leave (the only wait in the server's life). */
        uint64_t deadline = mono_ns() + (uint64_t)SHUTDOWN_FLUSH_MS * 1000000u;
        while (srv->hs_live > 0 && mono_ns() < deadline) {
            MHD_run(srv->hs_mhd);
            struct pollfd pfd = {.fd = srv->hs_epfd, .events = POLLIN};
            MHD_UNSIGNED_LONG_LONG to = 10;
            if (MHD_get_timeout(srv->hs_mhd, &to) != MHD_YES || to > 10)
                to = 10;
            poll(&pfd, 1, (int)to);
        }
        if (srv->hs_epfd >= 0)
            msm_loop_unwatch(srv->hs_loop, srv->hs_epfd);
        MHD_stop_daemon(srv->hs_mhd);
        srv->hs_mhd = NULL;
    }
    if (srv->hs_hook_added)
        msm_loop_remove_before_sleep(srv->hs_loop, before_sleep, srv);
    msm_loop_timer_stop(srv->hs_loop, &srv->hs_timer);
    msm_loop_timer_stop(srv->hs_loop, &srv->hs_sweep);
    route_t *rt = srv->hs_routes;
    while (rt) {
        route_t *next = rt->rt_next;
        route_free(rt);
        rt = next;
    }
    if (srv->hs_own_metrics)
        msm_metrics_free(srv->hs_metrics);
    json_decref(srv->hs_config);
    for (size_t i = 0; i < 3; i++)
        free(srv->hs_tls_pem[i]);
    free(srv->hs_name);
    free(srv);
}

void msm_http_server_set_guard(msm_http_server_t *srv, msm_http_guard_cb *cb, void *opaque)
{
    srv->hs_guard = cb;
    srv->hs_guard_opaque = opaque;
}

void msm_http_req_set_principal(msm_http_req_t *req, void *principal)
{
    req->rq_principal = principal;
}

void *msm_http_req_principal(const msm_http_req_t *req)
{
    return req->rq_principal;
}

uint16_t msm_http_server_port(const msm_http_server_t *srv)
{
    return srv->hs_port;
}

unsigned msm_http_server_connections(const msm_http_server_t *srv)
{
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info(srv->hs_mhd, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    return info ? info->num_connections : 0;
}

msm_metrics_t *msm_http_server_metrics(msm_http_server_t *srv)
{
    return srv->hs_metrics;
}

size_t msm_http_server_pending(const msm_http_server_t *srv)
{
    return srv->hs_ndeferred;
}
