/* SPDX-License-Identifier: MIT */
/* The HTTP client: libcurl's multi_socket interface on the msm loop (curl tells us which
 * sockets to watch and when to call it back; we call curl_multi_socket_action on readiness
 * and on the timer), a pool of reusable requests with their easy handles and buffers, and
 * the translation of curl's results into msm_http_result_t (see msm/http_client.h). */
#include "msm/http_client.h"
#include "msm/err.h"
#include "msm/log.h"
#include "msm/time.h"
#include "msm/version.h"

#include <curl/curl.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define FAC "http_client"

#define DEFAULT_MAX_TOTAL          256
#define DEFAULT_MAX_HOST           64
#define DEFAULT_TIMEOUT_MS         30000
#define DEFAULT_CONNECT_TIMEOUT_MS 5000
#define DEFAULT_IDLE_S             55
#define POOL_KEEP                  256 /* idle requests (easy handles) kept for reuse */
#define BUF_KEEP                   ((size_t)64 * 1024) /* larger buffers are freed, not pooled */
#define MAX_METHOD                 16

enum { CALL_IDLE = 0, CALL_ACTIVE = 1, CALL_IN_CB = 2 };
enum { OVER_NONE = 0, OVER_BODY, OVER_HEADERS, OVER_NOMEM };

/* ---- types ---- */

typedef struct {
    uint32_t he_name; /* offsets into hd_buf, so the buffer may move while growing */
    uint32_t he_value;
} hdr_ent_t;

struct msm_http_headers_s {
    char *hd_buf; /* "name\0value\0" per header */
    size_t hd_len, hd_cap;
    hdr_ent_t *hd_ent;
    size_t hd_n, hd_ent_cap;
};

/* The PEM lives in the blobs' own copies; libcurl borrows them (CURL_BLOB_NOCOPY). */
struct msm_http_tls_s {
    unsigned tl_refs;
    struct curl_blob tl_ca, tl_cert, tl_key; /* data NULL: not given */
};

struct msm_http_call_s {
    msm_http_call_t *ca_prev, *ca_next;
    msm_http_client_t *ca_client;
    CURL *ca_easy;
    int ca_ready;  /* the client-wide options are set (kept across reuses of the handle) */
    msm_http_tls_t *ca_tls; /* the TLS settings on ca_easy (a reference); NULL: the client's */
    struct curl_slist *ca_hdrs;  /* points into ca_nodes: no allocation per header */
    struct curl_slist *ca_nodes;
    size_t ca_nodes_cap;
    char *ca_htext; /* the header lines, back to back */
    size_t ca_htext_cap;
    char *ca_body; /* the copied request body */
    size_t ca_body_cap;
    char *ca_resp; /* response body, kept NUL-terminated */
    size_t ca_resp_len, ca_resp_cap, ca_resp_max;
    msm_http_headers_t ca_rhdrs;
    int ca_over; /* OVER_*: why a data callback refused data */
    int ca_state;
    msm_http_done_cb *ca_cb;
    void *ca_opaque;
    uint64_t ca_start_ms;
    char ca_errbuf[CURL_ERROR_SIZE];
    char ca_msg[CURL_ERROR_SIZE + 64];
    char ca_denied[256]; /* why the netpolicy refused an address ("" = it did not) */
};

typedef struct {
    msm_http_call_t *head, *tail;
    size_t n;
} call_list_t;

struct msm_http_client_s {
    msm_loop_t *cl_loop;
    CURLM *cl_multi;
    msm_timer_t cl_timer;
    msm_flush_t cl_kick; /* curl's "now": before the loop sleeps, not a turn later */
    char *cl_user_agent;
    char *cl_proxy;
    char *cl_ca_file;              /* NULL: libcurl's default store */
    const char *cl_default_capath; /* libcurl's default CA directory (static), or NULL */
    msm_netpolicy_t *cl_policy; /* NULL: every address may be connected to */
    uint32_t cl_timeout_ms;
    uint32_t cl_connect_timeout_ms;
    unsigned cl_idle_s;
    size_t cl_max_response;
    call_list_t cl_inflight;
    msm_http_call_t *cl_pool; /* singly linked through ca_next */
    size_t cl_pool_n;
    size_t cl_nsockets; /* sockets curl asked us to watch and not yet removed */
    /* Per fd: SOCK_OURS for a connection socket curl opened through on_open_socket() (and
     * will close through on_close_socket()), plus SOCK_PARKED while it idles in curl's
     * connection cache still watched for reading: a reused keep-alive connection then costs
     * no epoll_ctl() to leave and rejoin the loop. */
    unsigned char *cl_sock;
    size_t cl_nsock;
    msm_http_client_stats_t cl_stats;
    int cl_depth; /* nesting of entry points that may run callbacks */
    int cl_closing;
    int cl_free_pending;
};

/* ---- small helpers ---- */

static void list_push(call_list_t *l, msm_http_call_t *c)
{
    c->ca_next = NULL;
    c->ca_prev = l->tail;
    if (l->tail)
        l->tail->ca_next = c;
    else
        l->head = c;
    l->tail = c;
    l->n++;
}

static void list_remove(call_list_t *l, msm_http_call_t *c)
{
    if (c->ca_prev)
        c->ca_prev->ca_next = c->ca_next;
    else
        l->head = c->ca_next;
    if (c->ca_next)
        c->ca_next->ca_prev = c->ca_prev;
    else
        l->tail = c->ca_prev;
    c->ca_prev = c->ca_next = NULL;
    l->n--;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* Grows *buf to hold at least @p need bytes (doubling). */
static int grow(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return MSM_OK;
    size_t n = *cap ? *cap : 256;
    while (n < need)
        n = n > SIZE_MAX / 2 ? need : n * 2;
    char *p = realloc(*buf, n);
    if (!p)
        return MSM_ERR_NOMEM;
    *buf = p;
    *cap = n;
    return MSM_OK;
}

/* ---- response headers ---- */

static void headers_clear(msm_http_headers_t *h)
{
    h->hd_len = 0;
    h->hd_n = 0;
}

static void headers_release(msm_http_headers_t *h)
{
    free(h->hd_buf);
    free(h->hd_ent);
    memset(h, 0, sizeof(*h));
}

static void trim(const char **s, size_t *len)
{
    while (*len && (**s == ' ' || **s == '\t')) {
        (*s)++;
        (*len)--;
    }
    while (*len && ((*s)[*len - 1] == ' ' || (*s)[*len - 1] == '\t'))
        (*len)--;
}

static int
headers_add(msm_http_headers_t *h, const char *name, size_t nlen, const char *value, size_t vlen)
{
    size_t need = h->hd_len + nlen + vlen + 2;
    if (need > MSM_HTTP_CLIENT_MAX_HEADER_BYTES)
        return MSM_ERR_TOOLARGE;
    if (grow(&h->hd_buf, &h->hd_cap, need) != MSM_OK)
        return MSM_ERR_NOMEM;
    if (h->hd_n == h->hd_ent_cap) {
        size_t cap = h->hd_ent_cap ? h->hd_ent_cap * 2 : 16;
        hdr_ent_t *ent = realloc(h->hd_ent, cap * sizeof(*ent));
        if (!ent)
            return MSM_ERR_NOMEM;
        h->hd_ent = ent;
        h->hd_ent_cap = cap;
    }
    hdr_ent_t *e = &h->hd_ent[h->hd_n++];
    e->he_name = (uint32_t)h->hd_len;
    memcpy(h->hd_buf + h->hd_len, name, nlen);
    h->hd_len += nlen;
    h->hd_buf[h->hd_len++] = '\0';
    e->he_value = (uint32_t)h->hd_len;
    memcpy(h->hd_buf + h->hd_len, value, vlen);
    h->hd_len += vlen;
    h->hd_buf[h->hd_len++] = '\0';
    return MSM_OK;
}

/* An obsolete folded line continues the last header's value, which ends the buffer. */
static int headers_continue(msm_http_headers_t *h, const char *more, size_t len)
{
    if (h->hd_n == 0 || len == 0)
        return MSM_OK;
    size_t need = h->hd_len + len + 1;
    if (need > MSM_HTTP_CLIENT_MAX_HEADER_BYTES)
        return MSM_ERR_TOOLARGE;
    if (grow(&h->hd_buf, &h->hd_cap, need) != MSM_OK)
        return MSM_ERR_NOMEM;
    h->hd_buf[h->hd_len - 1] = ' ';
    memcpy(h->hd_buf + h->hd_len, more, len);
    h->hd_len += len;
    h->hd_buf[h->hd_len++] = '\0';
    return MSM_OK;
}

/* One header line as curl hands it over (CRLF included). */
static int headers_line(msm_http_headers_t *h, const char *line, size_t len)
{
    while (len && (line[len - 1] == '\r' || line[len - 1] == '\n'))
        len--;
    if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        /* A new status line: the headers of an interim (1xx) response are forgotten. */
        headers_clear(h);
        return MSM_OK;
    }
    if (len == 0)
        return MSM_OK;
    if (line[0] == ' ' || line[0] == '\t') {
        trim(&line, &len);
        return headers_continue(h, line, len);
    }
    const char *colon = memchr(line, ':', len);
    if (!colon)
        return MSM_OK; /* not a header: ignored, as curl does */
    const char *name = line, *value = colon + 1;
    size_t nlen = (size_t)(colon - line), vlen = len - nlen - 1;
    trim(&name, &nlen);
    trim(&value, &vlen);
    return headers_add(h, name, nlen, value, vlen);
}

const char *msm_http_headers_get(const msm_http_headers_t *h, const char *name)
{
    for (size_t i = 0; i < h->hd_n; i++) {
        if (strcasecmp(h->hd_buf + h->hd_ent[i].he_name, name) == 0)
            return h->hd_buf + h->hd_ent[i].he_value;
    }
    return NULL;
}

size_t msm_http_headers_count(const msm_http_headers_t *h)
{
    return h->hd_n;
}

int msm_http_headers_at(const msm_http_headers_t *h,
                        size_t i,
                        const char **name,
                        const char **value)
{
    if (i >= h->hd_n)
        return MSM_ERR_NOTFOUND;
    *name = h->hd_buf + h->hd_ent[i].he_name;
    *value = h->hd_buf + h->hd_ent[i].he_value;
    return MSM_OK;
}

/* ---- curl data callbacks (run inside curl_multi_socket_action) ---- */

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
    msm_http_call_t *c = userdata;
    size_t len = size * nmemb;
    /* Refusing the data (returning less than len) makes curl fail with CURLE_WRITE_ERROR;
     * the reason is kept for the result. */
    if (len > c->ca_resp_max - c->ca_resp_len) {
        c->ca_over = OVER_BODY;
        return 0;
    }
    if (grow(&c->ca_resp, &c->ca_resp_cap, c->ca_resp_len + len + 1) != MSM_OK) {
        c->ca_over = OVER_NOMEM;
        return 0;
    }
    memcpy(c->ca_resp + c->ca_resp_len, data, len);
    c->ca_resp_len += len;
    c->ca_resp[c->ca_resp_len] = '\0';
    return len;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *userdata)
{
    msm_http_call_t *c = userdata;
    size_t len = size * nmemb;
    int rc = headers_line(&c->ca_rhdrs, data, len);
    if (rc == MSM_OK)
        return len;
    c->ca_over = rc == MSM_ERR_TOOLARGE ? OVER_HEADERS : OVER_NOMEM;
    return 0;
}

/* ---- the request pool ---- */

static void call_destroy(msm_http_call_t *c)
{
    curl_easy_cleanup(c->ca_easy);
    msm_http_tls_release(c->ca_tls);
    free(c->ca_nodes);
    free(c->ca_htext);
    free(c->ca_body);
    free(c->ca_resp);
    headers_release(&c->ca_rhdrs);
    free(c);
}

/* A request ready to be set up: from the pool (its easy handle and buffers kept) or new. */
static msm_http_call_t *call_get(msm_http_client_t *cl)
{
    msm_http_call_t *c = cl->cl_pool;
    if (c) {
        cl->cl_pool = c->ca_next;
        cl->cl_pool_n--;
        c->ca_next = NULL;
        return c;
    }
    c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->ca_easy = curl_easy_init();
    if (!c->ca_easy) {
        free(c);
        return NULL;
    }
    return c;
}

/* Back to the pool once curl and the user are done with it. Big buffers are let go so one
 * large response does not pin memory for good. */
static void call_put(msm_http_client_t *cl, msm_http_call_t *c)
{
    c->ca_hdrs = NULL;
    c->ca_state = CALL_IDLE;
    c->ca_cb = NULL;
    c->ca_opaque = NULL;
    if (cl->cl_pool_n >= POOL_KEEP) {
        call_destroy(c);
        return;
    }
    if (c->ca_body_cap > BUF_KEEP) {
        free(c->ca_body);
        c->ca_body = NULL;
        c->ca_body_cap = 0;
    }
    if (c->ca_resp_cap > BUF_KEEP) {
        free(c->ca_resp);
        c->ca_resp = NULL;
        c->ca_resp_cap = 0;
    }
    if (c->ca_rhdrs.hd_cap > BUF_KEEP)
        headers_release(&c->ca_rhdrs);
    c->ca_next = cl->cl_pool;
    cl->cl_pool = c;
    cl->cl_pool_n++;
}

/* ---- request set-up ---- */

static int valid_method(const char *m)
{
    size_t n = strlen(m);
    if (n == 0 || n > MAX_METHOD)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (m[i] < 'A' || m[i] > 'Z')
            return 0;
    }
    return 1;
}

static int is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static int valid_header(const msm_http_header_t *h)
{
    if (!h->name || !h->value || !*h->name)
        return 0;
    for (const char *p = h->name; *p; p++) {
        if (!is_tchar((unsigned char)*p))
            return 0;
    }
    return strpbrk(h->value, "\r\n") == NULL;
}

static int valid_url(const char *url)
{
    return url && (strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0);
}

static int validate(const msm_http_request_t *req, const char *method)
{
    if (!valid_url(req->url) || !valid_method(method))
        return MSM_ERR_INVALID;
    if (req->body_len && !req->body)
        return MSM_ERR_INVALID;
    if (req->body_len && strcmp(method, "HEAD") == 0)
        return MSM_ERR_INVALID;
    if (req->n_headers && !req->headers)
        return MSM_ERR_INVALID;
    for (size_t i = 0; i < req->n_headers; i++) {
        if (!valid_header(&req->headers[i]))
            return MSM_ERR_INVALID;
    }
    return MSM_OK;
}

static int has_header(const msm_http_request_t *req, const char *name)
{
    for (size_t i = 0; i < req->n_headers; i++) {
        if (strcasecmp(req->headers[i].name, name) == 0)
            return 1;
    }
    return 0;
}

/* The header list lives in the call's own nodes and text buffer, sized once per request:
 * curl reads it during the transfer only. "Name: value", or "Name;" for an empty value
 * (curl sends that as an empty header; "Name:" would remove it). */
static int build_headers(msm_http_call_t *c, const msm_http_request_t *req, int has_body)
{
    int no_type = has_body && !has_header(req, "Content-Type");
    int no_expect = !has_header(req, "Expect");
    size_t n = req->n_headers + (size_t)no_type + (size_t)no_expect, text = 0;
    for (size_t i = 0; i < req->n_headers; i++)
        text += strlen(req->headers[i].name) + strlen(req->headers[i].value) + 3;
    text += sizeof("Content-Type:") + sizeof("Expect:");
    if (grow(&c->ca_htext, &c->ca_htext_cap, text) != MSM_OK)
        return MSM_ERR_NOMEM;
    if (n > c->ca_nodes_cap) {
        struct curl_slist *nodes = realloc(c->ca_nodes, n * sizeof(*nodes));
        if (!nodes)
            return MSM_ERR_NOMEM;
        c->ca_nodes = nodes;
        c->ca_nodes_cap = n;
    }
    char *p = c->ca_htext;
    size_t k = 0;
    for (size_t i = 0; i < req->n_headers; i++) {
        const char *name = req->headers[i].name, *value = req->headers[i].value;
        size_t nlen = strlen(name), vlen = strlen(value);
        c->ca_nodes[k++].data = p;
        memcpy(p, name, nlen); /* by hand: a push has a dozen headers, printf was 3% of it */
        p += nlen;
        if (vlen) {
            memcpy(p, ": ", 2);
            memcpy(p + 2, value, vlen);
            p += 2 + vlen;
        } else {
            *p++ = ';';
        }
        *p++ = '\0';
    }
    /* What curl would add on its own: no made-up form Content-Type for a body, and no
     * "Expect: 100-continue" round trip (many small servers answer it late or never). */
    if (no_type) {
        c->ca_nodes[k++].data = p;
        memcpy(p, "Content-Type:", sizeof("Content-Type:"));
        p += sizeof("Content-Type:");
    }
    if (no_expect) {
        c->ca_nodes[k++].data = p;
        memcpy(p, "Expect:", sizeof("Expect:"));
        p += sizeof("Expect:");
    }
    for (size_t i = 0; i < k; i++)
        c->ca_nodes[i].next = i + 1 < k ? &c->ca_nodes[i + 1] : NULL;
    c->ca_hdrs = k ? c->ca_nodes : NULL;
    return MSM_OK;
}

static int setopt_err(CURLcode rc)
{
    return rc == CURLE_OUT_OF_MEMORY ? MSM_ERR_NOMEM : MSM_ERR_INVALID;
}

#define SETOPT(e, opt, val)                                                                        \
    do {                                                                                           \
        CURLcode rc_ = curl_easy_setopt((e), (opt), (val));                                        \
        if (rc_ != CURLE_OK)                                                                       \
            return setopt_err(rc_);                                                                \
    } while (0)

#define SOCK_OURS   0x1
#define SOCK_PARKED 0x2

static unsigned sock_state(const msm_http_client_t *cl, curl_socket_t s)
{
    return s >= 0 && (size_t)s < cl->cl_nsock ? cl->cl_sock[s] : 0;
}

/* curl is about to open a socket to @p addr (after its own DNS lookup, before any byte is
 * sent): the one place that sees the address really connected to, so the netpolicy is
 * judged here. Refusing makes curl try the host's next address, or fail the request. */
static curl_socket_t on_open_socket(void *clientp, curlsocktype purpose,
                                    struct curl_sockaddr *addr)
{
    msm_http_call_t *c = clientp;
    msm_http_client_t *cl = c->ca_client;
    const msm_netpolicy_t *p = cl->cl_policy;
    if (p && purpose == CURLSOCKTYPE_IPCXN) {
        char why[sizeof(c->ca_denied)];
        if (msm_netpolicy_check_sockaddr(p, &addr->addr, why, sizeof(why)) != MSM_OK) {
            snprintf(c->ca_denied, sizeof(c->ca_denied), "%s", why);
            return CURL_SOCKET_BAD;
        }
    }
    curl_socket_t s = socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
    if (s < 0)
        return CURL_SOCKET_BAD;
    if ((size_t)s >= cl->cl_nsock) {
        size_t n = cl->cl_nsock ? cl->cl_nsock : 64;
        while (n <= (size_t)s)
            n *= 2;
        unsigned char *grown = realloc(cl->cl_sock, n);
        if (!grown)
            return s; /* not ours: watched and removed the plain way */
        memset(grown + cl->cl_nsock, 0, n - cl->cl_nsock);
        cl->cl_sock = grown;
        cl->cl_nsock = n;
    }
    cl->cl_sock[s] = SOCK_OURS;
    return s;
}

/* curl closes a socket it opened: it leaves the loop first, parked or not (a closed fd is
 * gone from epoll, and a new socket may get its number). @p clientp: the client, which
 * outlives every connection (curl_multi_cleanup() closes them). */
static int on_close_socket(void *clientp, curl_socket_t s)
{
    msm_http_client_t *cl = clientp;
    if (sock_state(cl, s)) {
        msm_loop_unwatch(cl->cl_loop, s);
        cl->cl_sock[s] = 0;
    }
    return close(s);
}

/* Options every request gets from the client's configuration. */
static int setup_common(msm_http_client_t *cl, msm_http_call_t *c)
{
    CURL *e = c->ca_easy;
    if (c->ca_ready) {
        /* A pooled handle keeps these; only what one request may have changed goes back
         * (cheaper than curl_easy_reset() and setting everything again). */
        SETOPT(e, CURLOPT_NOBODY, 0L);
        SETOPT(e, CURLOPT_CUSTOMREQUEST, (char *)NULL);
        SETOPT(e, CURLOPT_HTTPGET, 1L);
        return MSM_OK;
    }
    SETOPT(e, CURLOPT_PRIVATE, c);
    SETOPT(e, CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
    SETOPT(e, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    SETOPT(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    SETOPT(e, CURLOPT_USERAGENT, cl->cl_user_agent);
    SETOPT(e, CURLOPT_PROXY, cl->cl_proxy ? cl->cl_proxy : "");
    SETOPT(e, CURLOPT_CONNECTTIMEOUT_MS, (long)cl->cl_connect_timeout_ms);
    SETOPT(e, CURLOPT_MAXAGE_CONN, (long)cl->cl_idle_s);
    SETOPT(e, CURLOPT_TCP_KEEPALIVE, 1L);
    SETOPT(e, CURLOPT_ERRORBUFFER, c->ca_errbuf);
    SETOPT(e, CURLOPT_WRITEFUNCTION, on_body);
    SETOPT(e, CURLOPT_WRITEDATA, c);
    SETOPT(e, CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(e, CURLOPT_HEADERDATA, c);
    SETOPT(e, CURLOPT_SSLCERTTYPE, "PEM");
    if (cl->cl_ca_file) {
        SETOPT(e, CURLOPT_CAINFO, cl->cl_ca_file);
        SETOPT(e, CURLOPT_CAPATH, (char *)NULL); /* the file replaces the whole default store */
    }
    SETOPT(e, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    SETOPT(e, CURLOPT_OPENSOCKETDATA, c);
    SETOPT(e, CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
    SETOPT(e, CURLOPT_CLOSESOCKETDATA, cl);
    c->ca_ready = 1;
    return MSM_OK;
}

static int set_tls_options(msm_http_client_t *cl, CURL *e, msm_http_tls_t *tls)
{
    int own_ca = tls && tls->tl_ca.data;
    SETOPT(e, CURLOPT_CAINFO_BLOB, own_ca ? &tls->tl_ca : NULL);
    /* A CA blob replaces only the CA file: the default CA directory would still be trusted. */
    SETOPT(e, CURLOPT_CAPATH, own_ca || cl->cl_ca_file ? NULL : cl->cl_default_capath);
    SETOPT(e, CURLOPT_SSLCERT_BLOB, tls && tls->tl_cert.data ? &tls->tl_cert : NULL);
    SETOPT(e, CURLOPT_SSLKEY_BLOB, tls && tls->tl_key.data ? &tls->tl_key : NULL);
    return MSM_OK;
}

/* The request's TLS settings on the handle, unless they are there already (a pooled handle
 * keeps its last ones). libcurl keeps pointers into the PEM, so the handle holds a reference
 * for as long as they are set. */
static int setup_tls(msm_http_client_t *cl, msm_http_call_t *c, msm_http_tls_t *tls)
{
    if (c->ca_tls == tls)
        return MSM_OK;
    int rc = set_tls_options(cl, c->ca_easy, tls);
    if (rc != MSM_OK) {
        /* Half set: back to a fresh handle, so no option points into released PEM. */
        curl_easy_reset(c->ca_easy);
        c->ca_ready = 0;
        tls = NULL;
    }
    msm_http_tls_release(c->ca_tls);
    c->ca_tls = tls ? msm_http_tls_keep(tls) : NULL;
    return rc;
}

static int setup_body(msm_http_call_t *c, const msm_http_request_t *req)
{
    const void *body = req->body;
    if (req->body_len && !(req->flags & MSM_HTTP_BODY_BORROW)) {
        if (grow(&c->ca_body, &c->ca_body_cap, req->body_len) != MSM_OK)
            return MSM_ERR_NOMEM;
        memcpy(c->ca_body, req->body, req->body_len);
        body = c->ca_body;
    }
    /* The size first: without it curl would take strlen() of the body. */
    SETOPT(c->ca_easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    SETOPT(c->ca_easy, CURLOPT_POSTFIELDS, body ? body : "");
    return MSM_OK;
}

static int setup_request(msm_http_client_t *cl,
                         msm_http_call_t *c,
                         const msm_http_request_t *req,
                         const char *method)
{
    CURL *e = c->ca_easy;
    int rc = setup_common(cl, c);
    if (rc == MSM_OK)
        rc = setup_tls(cl, c, req->tls);
    if (rc != MSM_OK)
        return rc;
    SETOPT(e, CURLOPT_URL, req->url);
    uint32_t timeout = req->timeout_ms ? req->timeout_ms : cl->cl_timeout_ms;
    SETOPT(e, CURLOPT_TIMEOUT_MS, (long)timeout);
    int has_body = req->body_len > 0 || strcmp(method, "POST") == 0;
    if (strcmp(method, "HEAD") == 0) {
        SETOPT(e, CURLOPT_NOBODY, 1L);
    } else if (has_body) {
        if ((rc = setup_body(c, req)) != MSM_OK)
            return rc;
        if (strcmp(method, "POST") != 0)
            SETOPT(e, CURLOPT_CUSTOMREQUEST, method);
    } else if (strcmp(method, "GET") != 0) {
        SETOPT(e, CURLOPT_CUSTOMREQUEST, method);
    }
    if ((rc = build_headers(c, req, has_body)) != MSM_OK)
        return rc;
    SETOPT(e, CURLOPT_HTTPHEADER, c->ca_hdrs);
    c->ca_resp_len = 0;
    if (c->ca_resp)
        c->ca_resp[0] = '\0';
    c->ca_resp_max = req->max_response_bytes ? req->max_response_bytes : cl->cl_max_response;
    headers_clear(&c->ca_rhdrs);
    c->ca_over = OVER_NONE;
    c->ca_errbuf[0] = '\0';
    c->ca_denied[0] = '\0';
    return MSM_OK;
}

#undef SETOPT

/* ---- completion ---- */

static void enter(msm_http_client_t *cl)
{
    cl->cl_depth++;
}

static void really_free(msm_http_client_t *cl);

/* Leaves an entry point; the client is freed here if msm_http_client_free() ran inside. */
static void leave(msm_http_client_t *cl)
{
    if (--cl->cl_depth == 0 && cl->cl_free_pending)
        really_free(cl);
}

/* Takes @p c away from curl and the in-flight list, counting the connections it opened.
 * @p reused: a response arrived and this request opened no connection for it. */
static void detach(msm_http_client_t *cl, msm_http_call_t *c, long *status, int *reused)
{
    long connects = 0;
    *status = 0;
    curl_easy_getinfo(c->ca_easy, CURLINFO_NUM_CONNECTS, &connects);
    curl_easy_getinfo(c->ca_easy, CURLINFO_RESPONSE_CODE, status);
    curl_multi_remove_handle(cl->cl_multi, c->ca_easy);
    list_remove(&cl->cl_inflight, c);
    cl->cl_stats.connections_opened += (uint64_t)(connects > 0 ? connects : 0);
    *reused = connects == 0 && *status > 0;
}

static int err_of(const msm_http_call_t *c, CURLcode rc)
{
    if (rc == CURLE_WRITE_ERROR && c->ca_over != OVER_NONE)
        return c->ca_over == OVER_NOMEM ? MSM_ERR_NOMEM : MSM_ERR_TOOLARGE;
    /* No connection because the policy refused the address(es) it would have gone to. */
    if (rc == CURLE_COULDNT_CONNECT && c->ca_denied[0])
        return MSM_ERR_DENIED;
    switch (rc) {
    case CURLE_OK:
        return MSM_OK;
    case CURLE_OPERATION_TIMEDOUT:
        return MSM_ERR_TIMEOUT;
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_BAD_FUNCTION_ARGUMENT:
        return MSM_ERR_INVALID;
    case CURLE_OUT_OF_MEMORY:
        return MSM_ERR_NOMEM;
    case CURLE_FILESIZE_EXCEEDED:
        return MSM_ERR_TOOLARGE;
    default:
        return MSM_ERR_IO;
    }
}

static const char *error_text(msm_http_call_t *c, CURLcode rc)
{
    switch (c->ca_over) {
    case OVER_BODY:
        snprintf(c->ca_msg, sizeof(c->ca_msg), "response body over %zu bytes", c->ca_resp_max);
        return c->ca_msg;
    case OVER_HEADERS:
        snprintf(c->ca_msg, sizeof(c->ca_msg), "response headers over %zu bytes",
                 MSM_HTTP_CLIENT_MAX_HEADER_BYTES);
        return c->ca_msg;
    case OVER_NOMEM:
        return "out of memory storing the response";
    default:
        break;
    }
    if (err_of(c, rc) == MSM_ERR_DENIED) {
        snprintf(c->ca_msg, sizeof(c->ca_msg), "%s", c->ca_denied);
        return c->ca_msg;
    }
    snprintf(c->ca_msg, sizeof(c->ca_msg), "%s",
             c->ca_errbuf[0] ? c->ca_errbuf : curl_easy_strerror(rc));
    return c->ca_msg;
}

/* Runs the callback of a detached request, then returns it to the pool. */
static void deliver(msm_http_client_t *cl, msm_http_call_t *c, msm_http_result_t *res)
{
    if (res->err == MSM_OK) {
        cl->cl_stats.completed++;
    } else {
        cl->cl_stats.failed++;
        if (res->err == MSM_ERR_TIMEOUT)
            cl->cl_stats.timeouts++;
    }
    if (res->reused)
        cl->cl_stats.connections_reused++;
    res->headers = &c->ca_rhdrs;
    res->body = c->ca_resp ? c->ca_resp : "";
    res->body_len = c->ca_resp_len;
    res->latency_ms = msm_time_mono_ms() - c->ca_start_ms;
    c->ca_state = CALL_IN_CB;
    c->ca_cb(cl, c, res, c->ca_opaque);
    call_put(cl, c);
}

static void complete(msm_http_client_t *cl, msm_http_call_t *c, CURLcode rc)
{
    long status;
    int reused;
    detach(cl, c, &status, &reused);
    msm_http_result_t res = {0};
    res.reused = reused;
    res.curl_code = (int)rc;
    res.err = err_of(c, rc);
    res.error = res.err == MSM_OK ? NULL : error_text(c, rc);
    res.status = (int)status;
    deliver(cl, c, &res);
}

/* Hands every finished transfer to its callback. One message at a time: a callback may
 * cancel or free, and curl drops the queued messages of removed handles. */
static void collect_done(msm_http_client_t *cl)
{
    CURLMsg *msg;
    int left;
    while (!cl->cl_closing && (msg = curl_multi_info_read(cl->cl_multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *e = msg->easy_handle;
        CURLcode rc = msg->data.result;
        char *priv = NULL;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv);
        if (priv)
            complete(cl, (msm_http_call_t *)priv, rc);
    }
}

/* ---- curl on the loop ---- */

static void drive(msm_http_client_t *cl, curl_socket_t fd, int flags)
{
    enter(cl);
    int running = 0;
    CURLMcode mc = curl_multi_socket_action(cl->cl_multi, fd, flags, &running);
    if (mc != CURLM_OK)
        msm_log(MSM_LOG_WARN, FAC, "curl_multi_socket_action: %s", curl_multi_strerror(mc));
    collect_done(cl);
    leave(cl);
}

static void on_fd_ready(msm_loop_t *loop, int fd, int events, void *opaque)
{
    msm_http_client_t *cl = opaque;
    if (sock_state(cl, fd) & SOCK_PARKED) {
        /* An idle connection readable: the server closed it (or spoke out of turn). curl
         * finds out when it next checks the connection; until then it leaves the loop,
         * which would otherwise report it again at every turn. */
        msm_loop_unwatch(loop, fd);
        cl->cl_sock[fd] = SOCK_OURS;
        return;
    }
    int flags = 0;
    if (events & MSM_LOOP_READ)
        flags |= CURL_CSELECT_IN;
    if (events & MSM_LOOP_WRITE)
        flags |= CURL_CSELECT_OUT;
    if (events & MSM_LOOP_ERROR)
        flags |= CURL_CSELECT_ERR;
    drive(opaque, fd, flags);
}

static void on_timer(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    drive(opaque, CURL_SOCKET_TIMEOUT, 0);
}

/* CURLMOPT_SOCKETFUNCTION: curl says which events it wants on a socket. */
static int on_curl_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)easy;
    msm_http_client_t *cl = userp;
    unsigned state = sock_state(cl, s);
    if (what == CURL_POLL_REMOVE) {
        if (state && msm_loop_watched(cl->cl_loop, s) == MSM_LOOP_READ)
            cl->cl_sock[s] = SOCK_OURS | SOCK_PARKED; /* stays watched while it idles */
        else
            msm_loop_unwatch(cl->cl_loop, s);
        if (socketp)
            cl->cl_nsockets--;
        return 0;
    }
    int events = 0;
    if (what & CURL_POLL_IN)
        events |= MSM_LOOP_READ;
    if (what & CURL_POLL_OUT)
        events |= MSM_LOOP_WRITE;
    if (state & SOCK_PARKED) {
        cl->cl_sock[s] = SOCK_OURS;
        if (events == MSM_LOOP_READ)
            goto watched; /* as it is watched already */
    }
    if (msm_loop_watch(cl->cl_loop, s, events, on_fd_ready, cl) != MSM_OK) {
        msm_log(MSM_LOG_ERROR, FAC, "cannot watch socket %d", (int)s);
        return -1; /* curl fails the transfers on this socket */
    }
watched:
    if (!socketp) {
        /* Any non-NULL mark: curl hands it back until the socket is removed. */
        curl_multi_assign(cl->cl_multi, s, cl);
        cl->cl_nsockets++;
    }
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: one timer for the whole multi handle. curl must not be called
 * from here, so even "now" (0) goes through the loop: as a flush request, which runs before
 * the loop next sleeps (requests started this turn go out in it). A kick left queued when
 * a later deadline comes is harmless: curl does what is due, if anything. */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    msm_http_client_t *cl = userp;
    if (timeout_ms < 0) {
        msm_loop_timer_stop(cl->cl_loop, &cl->cl_timer);
        msm_loop_flush_cancel(cl->cl_loop, &cl->cl_kick);
    } else if (timeout_ms == 0) {
        msm_loop_timer_stop(cl->cl_loop, &cl->cl_timer);
        msm_loop_flush_later(cl->cl_loop, &cl->cl_kick);
    } else {
        msm_loop_timer_start(cl->cl_loop, &cl->cl_timer, (uint64_t)timeout_ms, on_timer, cl);
    }
    return 0;
}

/* ---- public API ---- */

static int blob_set(struct curl_blob *b, const char *pem)
{
    if (!pem)
        return MSM_OK;
    if (!(b->data = strdup(pem)))
        return MSM_ERR_NOMEM;
    b->len = strlen(pem);
    b->flags = CURL_BLOB_NOCOPY;
    return MSM_OK;
}

static void tls_free(msm_http_tls_t *tls)
{
    if (tls->tl_key.data)
        explicit_bzero(tls->tl_key.data, tls->tl_key.len); /* a secret: not left in the heap */
    free(tls->tl_ca.data);
    free(tls->tl_cert.data);
    free(tls->tl_key.data);
    free(tls);
}

msm_http_tls_t *msm_http_tls_new(const char *ca_pem, const char *cert_pem, const char *key_pem)
{
    if (!cert_pem != !key_pem)
        return NULL;
    msm_http_tls_t *tls = calloc(1, sizeof(*tls));
    if (!tls)
        return NULL;
    tls->tl_refs = 1;
    if (blob_set(&tls->tl_ca, ca_pem) != MSM_OK || blob_set(&tls->tl_cert, cert_pem) != MSM_OK ||
        blob_set(&tls->tl_key, key_pem) != MSM_OK) {
        tls_free(tls);
        return NULL;
    }
    return tls;
}

msm_http_tls_t *msm_http_tls_keep(msm_http_tls_t *tls)
{
    tls->tl_refs++;
    return tls;
}

void msm_http_tls_release(msm_http_tls_t *tls)
{
    if (tls && --tls->tl_refs == 0)
        tls_free(tls);
}

void msm_http_client_conf_init(msm_http_client_conf_t *conf)
{
    memset(conf, 0, sizeof(*conf));
}

int msm_http_url_host(const char *url, char *host, size_t size)
{
    CURLU *u = curl_url();
    char *h = NULL;
    int rc = MSM_ERR_INVALID;
    if (!u)
        return MSM_ERR_NOMEM;
    if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &h, 0) == CURLUE_OK && h && *h) {
        const char *p = h;
        size_t len = strlen(h);
        if (len >= 2 && p[0] == '[' && p[len - 1] == ']') {
            p++;
            len -= 2;
        }
        rc = len < size ? MSM_OK : MSM_ERR_TOOLARGE;
        if (rc == MSM_OK) {
            memcpy(host, p, len);
            host[len] = '\0';
        }
    }
    curl_free(h);
    curl_url_cleanup(u);
    return rc;
}

int msm_http_client_async_dns(void)
{
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    return (v->features & CURL_VERSION_ASYNCHDNS) != 0;
}

static int setup_multi(msm_http_client_t *cl, const msm_http_client_conf_t *conf)
{
    long total =
        conf->max_total_connections ? (long)conf->max_total_connections : DEFAULT_MAX_TOTAL;
    long host = conf->max_host_connections ? (long)conf->max_host_connections : DEFAULT_MAX_HOST;
    CURLM *m = cl->cl_multi;
    if (curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, on_curl_socket) != CURLM_OK ||
        curl_multi_setopt(m, CURLMOPT_SOCKETDATA, cl) != CURLM_OK ||
        curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, on_curl_timer) != CURLM_OK ||
        curl_multi_setopt(m, CURLMOPT_TIMERDATA, cl) != CURLM_OK ||
        curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, total) != CURLM_OK ||
        curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, host) != CURLM_OK ||
        curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, total) != CURLM_OK)
        return MSM_ERR_INVALID;
    return MSM_OK;
}

msm_http_client_t *msm_http_client_new(msm_loop_t *loop,
                                       const msm_http_client_conf_t *conf,
                                       char *errbuf,
                                       size_t errbuf_size)
{
    msm_http_client_conf_t defaults;
    if (!conf) {
        msm_http_client_conf_init(&defaults);
        conf = &defaults;
    }
    if (!loop) {
        snprintf(errbuf, errbuf_size, "no loop");
        return NULL;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(errbuf, errbuf_size, "curl_global_init failed");
        return NULL;
    }
    msm_http_client_t *cl = calloc(1, sizeof(*cl));
    if (!cl)
        goto nomem;
    cl->cl_loop = loop;
    msm_timer_init(&cl->cl_timer);
    msm_flush_init(&cl->cl_kick, on_timer, cl);
    cl->cl_timeout_ms = conf->timeout_ms ? conf->timeout_ms : DEFAULT_TIMEOUT_MS;
    cl->cl_connect_timeout_ms =
        conf->connect_timeout_ms ? conf->connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS;
    cl->cl_idle_s = conf->idle_timeout_s ? conf->idle_timeout_s : DEFAULT_IDLE_S;
    cl->cl_max_response =
        conf->max_response_bytes ? conf->max_response_bytes : MSM_HTTP_CLIENT_DEFAULT_MAX_RESPONSE;
    if (conf->user_agent) {
        cl->cl_user_agent = strdup(conf->user_agent);
    } else {
        char ua[64];
        snprintf(ua, sizeof(ua), "msm/%s", msm_version());
        cl->cl_user_agent = strdup(ua);
    }
    cl->cl_proxy = dup_or_null(conf->proxy);
    cl->cl_ca_file = dup_or_null(conf->ca_file);
    if (!cl->cl_user_agent || (conf->proxy && !cl->cl_proxy) ||
        (conf->ca_file && !cl->cl_ca_file))
        goto nomem;
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    cl->cl_default_capath = v->age >= CURLVERSION_SEVENTH ? v->capath : NULL;
    if (conf->netpolicy && !(cl->cl_policy = msm_netpolicy_dup(conf->netpolicy)))
        goto nomem;
    if (!(cl->cl_multi = curl_multi_init()))
        goto nomem;
    if (setup_multi(cl, conf) != MSM_OK) {
        snprintf(errbuf, errbuf_size, "curl_multi_setopt failed");
        goto fail;
    }
    if (!msm_http_client_async_dns())
        msm_log(MSM_LOG_WARN, FAC,
                "libcurl has no asynchronous resolver: host names are "
                "resolved on the loop thread (blocking)");
    return cl;
nomem:
    snprintf(errbuf, errbuf_size, "out of memory");
fail:
    if (cl) {
        curl_multi_cleanup(cl->cl_multi);
        free(cl->cl_user_agent);
        free(cl->cl_proxy);
        free(cl->cl_ca_file);
        msm_netpolicy_free(cl->cl_policy);
        free(cl);
    }
    curl_global_cleanup();
    return NULL;
}

static void really_free(msm_http_client_t *cl)
{
    /* Closes the pooled connections; curl may still call our socket and timer callbacks. */
    curl_multi_cleanup(cl->cl_multi);
    cl->cl_multi = NULL;
    msm_loop_timer_stop(cl->cl_loop, &cl->cl_timer);
    msm_loop_flush_cancel(cl->cl_loop, &cl->cl_kick);
    if (cl->cl_nsockets)
        msm_log(MSM_LOG_DEBUG, FAC, "%zu sockets not removed by curl", cl->cl_nsockets);
    free(cl->cl_sock);
    msm_http_call_t *c;
    while ((c = cl->cl_pool)) {
        cl->cl_pool = c->ca_next;
        call_destroy(c);
    }
    free(cl->cl_user_agent);
    free(cl->cl_proxy);
    free(cl->cl_ca_file);
    msm_netpolicy_free(cl->cl_policy);
    free(cl);
    curl_global_cleanup();
}

void msm_http_client_free(msm_http_client_t *cl)
{
    if (!cl || cl->cl_closing)
        return;
    cl->cl_closing = 1;
    enter(cl);
    /* Callbacks may cancel other requests: always take the current head. */
    msm_http_call_t *c;
    while ((c = cl->cl_inflight.head)) {
        long status;
        int reused;
        detach(cl, c, &status, &reused);
        msm_http_result_t res = {0};
        res.err = MSM_ERR_SHUTDOWN;
        res.error = "client closed";
        res.status = (int)status;
        deliver(cl, c, &res);
    }
    cl->cl_free_pending = 1;
    leave(cl);
}

int msm_http_client_request(msm_http_client_t *cl,
                            const msm_http_request_t *req,
                            msm_http_done_cb *cb,
                            void *opaque,
                            msm_http_call_t **call_out)
{
    if (call_out)
        *call_out = NULL;
    if (cl->cl_closing)
        return MSM_ERR_SHUTDOWN;
    if (!req || !cb)
        return MSM_ERR_INVALID;
    const char *method = req->method ? req->method : req->body_len ? "POST" : "GET";
    int rc = validate(req, method);
    if (rc != MSM_OK)
        return rc;
    msm_http_call_t *c = call_get(cl);
    if (!c)
        return MSM_ERR_NOMEM;
    c->ca_client = cl;
    if ((rc = setup_request(cl, c, req, method)) != MSM_OK)
        goto fail;
    /* curl only arms its timer here; the transfer starts from the loop, so the callback can
     * never run inside this call. */
    if (curl_multi_add_handle(cl->cl_multi, c->ca_easy) != CURLM_OK) {
        rc = MSM_ERR_NOMEM;
        goto fail;
    }
    c->ca_cb = cb;
    c->ca_opaque = opaque;
    c->ca_start_ms = msm_time_mono_ms();
    c->ca_state = CALL_ACTIVE;
    list_push(&cl->cl_inflight, c);
    cl->cl_stats.started++;
    if (call_out)
        *call_out = c;
    return MSM_OK;
fail:
    call_put(cl, c);
    return rc;
}

void msm_http_call_cancel(msm_http_call_t *call)
{
    if (!call || call->ca_state != CALL_ACTIVE)
        return;
    msm_http_client_t *cl = call->ca_client;
    long status;
    int reused;
    detach(cl, call, &status, &reused);
    cl->cl_stats.cancelled++;
    call_put(cl, call);
}

void msm_http_client_stats(const msm_http_client_t *cl, msm_http_client_stats_t *out)
{
    *out = cl->cl_stats;
}

size_t msm_http_client_pending(const msm_http_client_t *cl)
{
    return cl->cl_inflight.n;
}
