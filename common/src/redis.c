/* SPDX-License-Identifier: MIT */
/* The Redis client: hiredis async attached to msm_loop (as hiredis adapters/ae.h does),
 * with connect/command timeouts, reconnection with backoff, prompt failure while down,
 * EVALSHA with a NOSCRIPT fallback, and namespaced keys (see msm/redis.h). */
#include "hex_int.h"
#include "tls_tunnel_int.h"
#include "msm/redis.h"
#include "msm/err.h"
#include "msm/log.h"

#include <hiredis/async.h>
#include <openssl/evp.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FAC "redis"

#define POOL_KEEP 1024 /* free request structs kept for reuse */

enum { ST_DOWN = 0, ST_CONNECTING = 1, ST_UP = 2 };
enum { REQ_USER = 0, REQ_HANDSHAKE = 1, REQ_EVALSHA = 2 };

/* One command from issue to callback. hiredis holds a pointer to it as privdata. */
typedef struct req_s req_t;
struct req_s {
    req_t *rq_prev, *rq_next;
    msm_redis_reply_cb *rq_cb;
    void *rq_opaque;
    uint64_t rq_sent_ms;
    uint32_t rq_extra_ms;
    uint8_t rq_kind;
    uint8_t rq_cancelled; /* completed by msm_redis_free(); hiredis still holds it */
    uint8_t rq_fatal;     /* handshake: an error reply ends the connection */
    const char *rq_fail;  /* why it failed without being sent */
    char *rq_cmd;         /* EVALSHA: the formatted command, kept for the EVAL retry */
    size_t rq_cmdlen;
    const msm_redis_script_t *rq_script;
};

typedef struct {
    req_t *head, *tail;
    size_t n;
} req_list_t;

struct msm_redis_script_s {
    char *sc_src;
    size_t sc_len;
    char sc_sha[41];
};

struct msm_redis_s {
    msm_loop_t *rd_loop;
    msm_redis_url_t rd_url;
    msm_tls_tunnel_t *rd_tunnel; /* rediss://: hiredis connects through it */
    char rd_master_host[256];    /* redis-sentinel://: the master's address as last told */
    int rd_master_port;
    char *rd_ns;
    char *rd_name;
    uint32_t rd_connect_timeout_ms;
    uint32_t rd_command_timeout_ms;
    uint32_t rd_backoff_min_ms;
    uint32_t rd_backoff_max_ms;

    redisAsyncContext *rd_ac; /* NULL while down */
    int rd_fd;
    int rd_ev_mask;
    msm_flush_t rd_flush; /* buffered commands to write before the loop sleeps */
    int rd_flushing;      /* inside that write: what is left waits for writability */
    int rd_state;
    int rd_handshake_left;
    uint64_t rd_progress_ms; /* last reply, or when the in-flight list became non-empty */
    uint64_t rd_backoff_ms;
    int rd_ever_up;
    int rd_down_logged; /* the current outage was logged once already */
    uint64_t rd_rand;

    req_list_t rd_inflight; /* handed to hiredis, in send order (= reply order) */
    req_list_t rd_failq;    /* failed before sending; their callbacks run next turn */
    req_t *rd_pool;
    size_t rd_pool_n;

    msm_timer_t rd_t_reconnect;
    msm_timer_t rd_t_connect;
    msm_timer_t rd_t_timeout;
    msm_timer_t rd_t_fail;

    const char *rd_drop_reason; /* why the current connection is going away */
    char rd_drop_buf[256];
    char rd_last_err[256];
    char rd_failmsg[320];

    msm_redis_state_cb *rd_state_cb;
    void *rd_state_opaque;
    msm_redis_stats_t rd_stats;

    int rd_depth; /* nesting of our entry points that may run callbacks */
    int rd_closing;
    int rd_free_pending;
};

static const char *const NOT_CONNECTED = "redis not connected";

/* ---- small helpers ---- */

static void list_push(req_list_t *l, req_t *q)
{
    q->rq_next = NULL;
    q->rq_prev = l->tail;
    if (l->tail)
        l->tail->rq_next = q;
    else
        l->head = q;
    l->tail = q;
    l->n++;
}

static void list_remove(req_list_t *l, req_t *q)
{
    if (q->rq_prev)
        q->rq_prev->rq_next = q->rq_next;
    else
        l->head = q->rq_next;
    if (q->rq_next)
        q->rq_next->rq_prev = q->rq_prev;
    else
        l->tail = q->rq_prev;
    q->rq_prev = q->rq_next = NULL;
    l->n--;
}

static req_t *req_get(msm_redis_t *r)
{
    req_t *q = r->rd_pool;
    if (q) {
        r->rd_pool = q->rq_next;
        r->rd_pool_n--;
        memset(q, 0, sizeof(*q));
        return q;
    }
    return calloc(1, sizeof(*q));
}

static void req_put(msm_redis_t *r, req_t *q)
{
    free(q->rq_cmd);
    q->rq_cmd = NULL;
    if (r->rd_pool_n >= POOL_KEEP) {
        free(q);
        return;
    }
    q->rq_next = r->rd_pool;
    r->rd_pool = q;
    r->rd_pool_n++;
}

static uint64_t next_rand(msm_redis_t *r)
{
    uint64_t x = r->rd_rand;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return r->rd_rand = x;
}

static uint64_t now_ms(const msm_redis_t *r)
{
    return msm_loop_now_ms(r->rd_loop);
}

static void really_free(msm_redis_t *r)
{
    msm_loop_flush_cancel(r->rd_loop, &r->rd_flush);
    while (r->rd_pool) {
        req_t *q = r->rd_pool;
        r->rd_pool = q->rq_next;
        free(q);
    }
    msm_tls_tunnel_free(r->rd_tunnel);
    free(r->rd_ns);
    free(r->rd_name);
    free(r);
}

static void enter(msm_redis_t *r)
{
    r->rd_depth++;
}

/* Leaves an entry point; the client is freed here when msm_redis_free() was called inside. */
static void leave(msm_redis_t *r)
{
    if (--r->rd_depth == 0 && r->rd_free_pending)
        really_free(r);
}

/* ---- URL ---- */

static void percent_decode(char *s)
{
    char *o = s;
    for (char *p = s; *p; p++) {
        int hi, lo;
        if (p[0] == '%' && (hi = msm__hex_value((unsigned char)p[1])) >= 0 &&
            (lo = msm__hex_value((unsigned char)p[2])) >= 0) {
            *o++ = (char)(hi * 16 + lo);
            p += 2;
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
}

static int parse_uint(const char *s, long max, long *out)
{
    if (!*s)
        return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < 0 || v > max || !isdigit((unsigned char)*s))
        return -1;
    *out = v;
    return 0;
}

int msm_redis_url_with_password(const char *url, const char *password, char *out, size_t n)
{
    if (!url)
        url = "redis://127.0.0.1:6379";
    const char *scheme = strncmp(url, "rediss://", 9) == 0           ? "rediss://"
                         : strncmp(url, "redis-sentinel://", 17) == 0 ? "redis-sentinel://"
                                                                      : "redis://";
    if (strncmp(url, scheme, strlen(scheme)) != 0)
        return MSM_ERR_PARSE;
    const char *rest = url + strlen(scheme);
    size_t authority = strcspn(rest, "/?");
    const char *at = memchr(rest, '@', authority);
    size_t user_len = 0;
    if (at) {
        const char *colon = memchr(rest, ':', (size_t)(at - rest));
        user_len = (size_t)((colon ? colon : at) - rest);
    }
    size_t used = (size_t)snprintf(out, n, "%s%.*s:", scheme, (int)user_len, rest);
    /* Percent-encode all but unreserved characters: the URL parser decodes them back. */
    for (const unsigned char *p = (const unsigned char *)password; *p && used < n; p++) {
        if (isalnum(*p) || strchr("-._~", *p))
            used += (size_t)snprintf(out + used, n - used, "%c", *p);
        else
            used += (size_t)snprintf(out + used, n - used, "%%%02X", *p);
    }
    if (used < n)
        used += (size_t)snprintf(out + used, n - used, "@%s", at ? at + 1 : rest);
    return used < n ? MSM_OK : MSM_ERR_INVALID;
}

/* The query options of a redis URL (only TLS files, only with rediss://): in place. */
static int parse_query(char *q, msm_redis_url_t *out, char *errbuf, size_t errbuf_size)
{
    static const char *const names[] = {"ssl_ca_certs", "ssl_certfile", "ssl_keyfile"};
    const char **slots[] = {&out->tls_ca, &out->tls_cert, &out->tls_key};
    char *save = NULL;
    for (char *opt = strtok_r(q, "&", &save); opt; opt = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(opt, '=');
        size_t i = 0;
        if (eq)
            *eq = '\0';
        while (i < 3 && strcmp(opt, names[i]) != 0)
            i++;
        if (i == 3 || !eq || !eq[1]) {
            snprintf(errbuf, errbuf_size,
                     i == 3 ? "unknown redis url option \"%s\" (known: ssl_ca_certs, "
                              "ssl_certfile, ssl_keyfile)"
                            : "redis url option %s needs a value",
                     opt);
            return MSM_ERR_PARSE;
        }
        if (!out->tls) {
            snprintf(errbuf, errbuf_size, "redis url option %s needs rediss:// (TLS)", opt);
            return MSM_ERR_PARSE;
        }
        percent_decode(eq + 1);
        *slots[i] = eq + 1;
    }
    if (!out->tls_cert != !out->tls_key) {
        snprintf(errbuf, errbuf_size, "redis url: ssl_certfile and ssl_keyfile go together");
        return MSM_ERR_PARSE;
    }
    return MSM_OK;
}

/* redis-sentinel://…: "host:port,…/MASTER[/db]" at @p p (in place). */
static int parse_sentinels(char *p, const char *url, msm_redis_url_t *out, char *errbuf,
                           size_t errbuf_size)
{
    char *slash = strchr(p, '/');
    if (!slash || !slash[1] || slash == p) {
        snprintf(errbuf, errbuf_size,
                 "redis-sentinel url needs host:port[,host:port…]/MASTER (got \"%s\")", url);
        return MSM_ERR_PARSE;
    }
    *slash = '\0';
    out->sentinels = p;
    out->master = slash + 1;
    char *db = strchr(slash + 1, '/');
    if (db) {
        *db = '\0';
        long v = 0;
        if (db[1] && parse_uint(db + 1, 1 << 20, &v) != 0) {
            snprintf(errbuf, errbuf_size, "bad database number in redis url \"%s\"", url);
            return MSM_ERR_PARSE;
        }
        out->db = (int)v;
    }
    for (const char *h = p; *h;) { /* every entry is host:port */
        size_t n = strcspn(h, ",");
        const char *colon = memrchr(h, ':', n);
        long port = 0;
        char num[8] = "";
        if (colon && (size_t)(h + n - colon - 1) < sizeof(num))
            memcpy(num, colon + 1, (size_t)(h + n - colon - 1));
        if (!colon || colon == h || parse_uint(num, 65535, &port) != 0 || port == 0) {
            snprintf(errbuf, errbuf_size, "redis-sentinel url: \"%.*s\" is not host:port",
                     (int)n, h);
            return MSM_ERR_PARSE;
        }
        h += n + (h[n] == ',');
    }
    out->host = "(sentinel)";
    out->port = 0;
    return MSM_OK;
}

int msm_redis_url_parse(const char *url, msm_redis_url_t *out, char *errbuf, size_t errbuf_size)
{
    memset(out, 0, sizeof(*out));
    out->port = 6379;
    out->host = "127.0.0.1";
    if (!url)
        url = "redis://127.0.0.1:6379";
    static const char sentinel_scheme[] = "redis-sentinel://";
    int sentinel = strncmp(url, sentinel_scheme, sizeof(sentinel_scheme) - 1) == 0;
    out->tls = strncmp(url, "rediss://", 9) == 0;
    if (!out->tls && !sentinel && strncmp(url, "redis://", 8) != 0) {
        snprintf(errbuf, errbuf_size,
                 "redis url must start with redis://, rediss:// or redis-sentinel:// (got \"%s\")",
                 url);
        return MSM_ERR_PARSE;
    }
    const char *rest = url + (sentinel ? sizeof(sentinel_scheme) - 1 : out->tls ? 9 : 8);
    if (strlen(rest) >= sizeof(out->buf)) {
        snprintf(errbuf, errbuf_size, "redis url too long");
        return MSM_ERR_PARSE;
    }
    strcpy(out->buf, rest);
    char *p = out->buf;
    char *q = strchr(p, '?');
    if (q) {
        *q = '\0';
        if (parse_query(q + 1, out, errbuf, errbuf_size) != MSM_OK)
            return MSM_ERR_PARSE;
    }
    char *at = strrchr(p, '@');
    if (at) {
        *at = '\0';
        char *colon = strchr(p, ':');
        if (colon) {
            *colon = '\0';
            out->user = *p ? p : NULL;
            out->password = colon + 1;
        } else {
            out->password = p; /* redis://secret@host: a password alone */
        }
        if (out->user)
            percent_decode((char *)out->user);
        percent_decode((char *)out->password);
        p = at + 1;
    }
    if (sentinel)
        return parse_sentinels(p, url, out, errbuf, errbuf_size);
    char *slash = strchr(p, '/');
    if (slash) {
        *slash = '\0';
        long db = 0;
        if (slash[1] && parse_uint(slash + 1, 1 << 20, &db) != 0) {
            snprintf(errbuf, errbuf_size, "bad database number in redis url \"%s\"", url);
            return MSM_ERR_PARSE;
        }
        out->db = (int)db;
    }
    char *portstr = NULL;
    if (*p == '[') {
        char *close = strchr(p, ']');
        if (!close) {
            snprintf(errbuf, errbuf_size, "unterminated [ in redis url \"%s\"", url);
            return MSM_ERR_PARSE;
        }
        *close = '\0';
        out->host = p + 1;
        if (close[1] == ':')
            portstr = close + 2;
        else if (close[1]) {
            snprintf(errbuf, errbuf_size, "junk after ] in redis url \"%s\"", url);
            return MSM_ERR_PARSE;
        }
    } else {
        char *colon = strrchr(p, ':');
        if (colon) {
            *colon = '\0';
            portstr = colon + 1;
        }
        if (*p)
            out->host = p;
    }
    if (portstr) {
        long port;
        if (parse_uint(portstr, 65535, &port) != 0 || port == 0) {
            snprintf(errbuf, errbuf_size, "bad port in redis url \"%s\"", url);
            return MSM_ERR_PARSE;
        }
        out->port = (int)port;
    }
    if (!*out->host) {
        snprintf(errbuf, errbuf_size, "empty host in redis url \"%s\"", url);
        return MSM_ERR_PARSE;
    }
    return MSM_OK;
}

/* ---- hiredis event hooks (the adapter) ---- */

static void on_fd(msm_loop_t *loop, int fd, int events, void *opaque);

static void ev_set(msm_redis_t *r, int mask)
{
    if (mask == r->rd_ev_mask || r->rd_fd < 0)
        return;
    if (mask) {
        if (msm_loop_watch(r->rd_loop, r->rd_fd, mask, on_fd, r) != MSM_OK)
            msm_log(MSM_LOG_ERROR, FAC, "cannot watch fd %d: %s", r->rd_fd, strerror(errno));
    } else {
        msm_loop_unwatch(r->rd_loop, r->rd_fd);
    }
    r->rd_ev_mask = mask;
}

static void ev_add_read(void *priv)
{
    msm_redis_t *r = priv;
    ev_set(r, r->rd_ev_mask | MSM_LOOP_READ);
}

static void ev_del_read(void *priv)
{
    msm_redis_t *r = priv;
    ev_set(r, r->rd_ev_mask & ~MSM_LOOP_READ);
}

/* Connected, the commands buffered this turn go out in one write before the loop sleeps,
 * with no round through epoll for writability (an epoll_wait and two epoll_ctl saved per
 * turn). Connecting, or with a write that did not finish, the socket's writability drives. */
static void ev_add_write(void *priv)
{
    msm_redis_t *r = priv;
    if (!r->rd_flushing && r->rd_ac && (r->rd_ac->c.flags & REDIS_CONNECTED)) {
        msm_loop_flush_later(r->rd_loop, &r->rd_flush);
        return;
    }
    ev_set(r, r->rd_ev_mask | MSM_LOOP_WRITE);
}

static void on_flush(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    msm_redis_t *r = opaque;
    redisAsyncContext *ac = r->rd_ac;
    if (!ac)
        return;
    enter(r);
    r->rd_flushing = 1;
    r->rd_stats.write_events++;
    redisAsyncHandleWrite(ac);
    r->rd_flushing = 0;
    leave(r);
}

static void ev_del_write(void *priv)
{
    msm_redis_t *r = priv;
    msm_loop_flush_cancel(r->rd_loop, &r->rd_flush);
    ev_set(r, r->rd_ev_mask & ~MSM_LOOP_WRITE);
}

static void schedule_reconnect(msm_redis_t *r);

/* hiredis is done with the connection (every pending callback has run): go down. */
static void ev_cleanup(void *priv)
{
    msm_redis_t *r = priv;
    ev_set(r, 0);
    msm_loop_flush_cancel(r->rd_loop, &r->rd_flush);
    redisAsyncContext *ac = r->rd_ac;
    const char *reason = r->rd_drop_reason;
    if (!reason)
        reason = ac && ac->errstr && *ac->errstr ? ac->errstr : "connection closed";
    snprintf(r->rd_last_err, sizeof(r->rd_last_err), "%s", reason);
    int was_up = r->rd_state == ST_UP;
    r->rd_ac = NULL;
    r->rd_fd = -1;
    r->rd_state = ST_DOWN;
    msm_loop_timer_stop(r->rd_loop, &r->rd_t_connect);
    msm_loop_timer_stop(r->rd_loop, &r->rd_t_timeout);
    if (r->rd_closing)
        return;
    if (was_up) {
        r->rd_stats.disconnects++;
        msm_log(MSM_LOG_WARN, FAC, "%s%s%s:%d: %s; reconnecting",
                r->rd_name ? r->rd_name : "", r->rd_name ? ": " : "", r->rd_url.host,
                r->rd_url.port, r->rd_last_err);
        r->rd_down_logged = 1;
    } else if (!r->rd_down_logged) {
        msm_log(MSM_LOG_WARN, FAC, "%s%scannot connect to %s:%d: %s; retrying with backoff",
                r->rd_name ? r->rd_name : "", r->rd_name ? ": " : "", r->rd_url.host,
                r->rd_url.port, r->rd_last_err);
        r->rd_down_logged = 1;
    } else {
        msm_log(MSM_LOG_DEBUG, FAC, "connect to %s:%d failed: %s", r->rd_url.host,
                r->rd_url.port, r->rd_last_err);
    }
    schedule_reconnect(r);
    if (was_up && r->rd_state_cb)
        r->rd_state_cb(r, 0, r->rd_last_err, r->rd_state_opaque);
}

/* Drops the current connection: hiredis runs every pending callback with a NULL reply
 * (now, or after the callback we are in returns) and then calls ev_cleanup(). */
static void drop(msm_redis_t *r, const char *reason)
{
    if (!r->rd_ac)
        return;
    snprintf(r->rd_drop_buf, sizeof(r->rd_drop_buf), "%s", reason);
    r->rd_drop_reason = r->rd_drop_buf;
    redisAsyncFree(r->rd_ac);
}

static void on_fd(msm_loop_t *loop, int fd, int events, void *opaque)
{
    (void)loop, (void)fd;
    msm_redis_t *r = opaque;
    redisAsyncContext *ac = r->rd_ac;
    if (!ac)
        return;
    enter(r);
    if (events & (MSM_LOOP_READ | MSM_LOOP_ERROR))
        redisAsyncHandleRead(ac);
    /* The read may have ended the connection (r->rd_ac is then NULL: reconnects only ever
     * start from a timer, so the pointer cannot be a new context here). */
    if (r->rd_ac == ac && (events & MSM_LOOP_WRITE) && (r->rd_ev_mask & MSM_LOOP_WRITE)) {
        r->rd_stats.write_events++;
        redisAsyncHandleWrite(ac);
    }
    leave(r);
}

/* ---- timers ---- */

static void on_timeout_timer(msm_loop_t *loop, void *opaque);

static void arm_timeout(msm_redis_t *r)
{
    req_t *head = r->rd_inflight.head;
    if (!head)
        return;
    uint64_t start = head->rq_sent_ms > r->rd_progress_ms ? head->rq_sent_ms : r->rd_progress_ms;
    uint64_t deadline = start + r->rd_command_timeout_ms + head->rq_extra_ms;
    uint64_t now = now_ms(r);
    msm_loop_timer_start(r->rd_loop, &r->rd_t_timeout, deadline > now ? deadline - now : 0,
                         on_timeout_timer, r);
}

static void on_timeout_timer(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    msm_redis_t *r = opaque;
    req_t *head = r->rd_inflight.head;
    /* While connecting, the connect timeout governs (became_up() re-arms this one). */
    if (!head || !r->rd_ac || r->rd_state != ST_UP)
        return;
    uint64_t start = head->rq_sent_ms > r->rd_progress_ms ? head->rq_sent_ms : r->rd_progress_ms;
    uint64_t waited = now_ms(r) - start;
    if (waited < (uint64_t)r->rd_command_timeout_ms + head->rq_extra_ms) {
        arm_timeout(r);
        return;
    }
    char reason[96];
    snprintf(reason, sizeof(reason), "command timeout (no reply for %llu ms)",
             (unsigned long long)waited);
    r->rd_stats.timeouts++;
    enter(r);
    drop(r, reason);
    leave(r);
}

static void on_connect_timer(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    msm_redis_t *r = opaque;
    if (r->rd_state != ST_CONNECTING || !r->rd_ac)
        return;
    char reason[64];
    snprintf(reason, sizeof(reason), "connect timeout (%u ms)", r->rd_connect_timeout_ms);
    r->rd_stats.timeouts++;
    enter(r);
    drop(r, reason);
    leave(r);
}

static const char *fail_text(msm_redis_t *r, const char *reason)
{
    if (reason == NOT_CONNECTED && r->rd_last_err[0]) {
        snprintf(r->rd_failmsg, sizeof(r->rd_failmsg), "%s (%s)", reason, r->rd_last_err);
        return r->rd_failmsg;
    }
    return reason;
}

static void on_fail_timer(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    msm_redis_t *r = opaque;
    enter(r);
    /* Only those queued before this turn: callbacks that fail again wait for the next. */
    size_t n = r->rd_failq.n;
    for (size_t i = 0; i < n && r->rd_failq.head; i++) {
        req_t *q = r->rd_failq.head;
        list_remove(&r->rd_failq, q);
        r->rd_stats.failed++;
        if (q->rq_cb)
            q->rq_cb(r, NULL, fail_text(r, q->rq_fail), q->rq_opaque);
        req_put(r, q);
    }
    if (r->rd_failq.head && !r->rd_closing)
        msm_loop_timer_start(r->rd_loop, &r->rd_t_fail, 0, on_fail_timer, r);
    leave(r);
}

static void fail_later(msm_redis_t *r, req_t *q, const char *reason)
{
    q->rq_fail = reason;
    list_push(&r->rd_failq, q);
    if (!msm_timer_active(&r->rd_t_fail))
        msm_loop_timer_start(r->rd_loop, &r->rd_t_fail, 0, on_fail_timer, r);
}

/* ---- sending and replies ---- */

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata);

/* Hands a formatted command to hiredis (or fails it next turn). @p cmd is freed unless
 * kept in q->rq_cmd. */
static void issue(msm_redis_t *r, req_t *q, char *cmd, int len)
{
    r->rd_stats.commands++;
    if (len < 0 || !cmd) {
        fail_later(r, q, "invalid command (format or out of memory)");
    } else if (!r->rd_ac || r->rd_state == ST_DOWN) {
        fail_later(r, q, NOT_CONNECTED);
    } else if (redisAsyncFormattedCommand(r->rd_ac, on_reply, q, cmd, (size_t)len) !=
               REDIS_OK) {
        fail_later(r, q, "connection closing");
    } else {
        q->rq_sent_ms = now_ms(r);
        if (!r->rd_inflight.head) {
            r->rd_progress_ms = q->rq_sent_ms;
            list_push(&r->rd_inflight, q);
            if (!msm_timer_active(&r->rd_t_timeout))
                arm_timeout(r);
        } else {
            list_push(&r->rd_inflight, q);
        }
    }
    if (cmd != q->rq_cmd)
        free(cmd);
}

static void became_up(msm_redis_t *r)
{
    r->rd_state = ST_UP;
    msm_loop_timer_stop(r->rd_loop, &r->rd_t_connect);
    r->rd_stats.connects++;
    r->rd_backoff_ms = r->rd_backoff_min_ms;
    if (!r->rd_ever_up)
        msm_log(MSM_LOG_INFO, FAC, "%s%sconnected to %s:%d db %d%s", r->rd_name ? r->rd_name : "",
                r->rd_name ? ": " : "", r->rd_url.host, r->rd_url.port, r->rd_url.db,
                r->rd_tunnel ? " over TLS" : "");
    else if (r->rd_down_logged)
        msm_log(MSM_LOG_INFO, FAC, "%s%sreconnected to %s:%d", r->rd_name ? r->rd_name : "",
                r->rd_name ? ": " : "", r->rd_url.host, r->rd_url.port);
    r->rd_ever_up = 1;
    r->rd_down_logged = 0;
    r->rd_last_err[0] = '\0';
    /* Commands queued while connecting start their timeout now. */
    r->rd_progress_ms = now_ms(r);
    arm_timeout(r);
    if (r->rd_state_cb)
        r->rd_state_cb(r, 1, NULL, r->rd_state_opaque);
}

static void handshake_reply(msm_redis_t *r, req_t *q, redisReply *reply)
{
    if (!reply)
        return; /* the connection is going away; ev_cleanup() follows */
    if (reply->type == REDIS_REPLY_ERROR && q->rq_fatal) {
        char reason[200];
        snprintf(reason, sizeof(reason), "handshake refused: %s", reply->str);
        drop(r, reason);
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR)
        msm_log(MSM_LOG_DEBUG, FAC, "handshake: %s", reply->str);
    if (--r->rd_handshake_left == 0 && r->rd_state == ST_CONNECTING)
        became_up(r);
}

static void eval_retry(msm_redis_t *r, req_t *q)
{
    /* EVALSHA was formatted as "*<n>\r\n$7\r\nEVALSHA\r\n$40\r\n<sha>\r\n<args>": the same
     * command with EVAL and the source takes the same argument count. */
    const char *cmd = q->rq_cmd;
    const char *eol = strstr(cmd, "\r\n");
    size_t head = (size_t)(eol - cmd) + 2;
    size_t skip = head + 13 + 47;
    const msm_redis_script_t *s = q->rq_script;
    char lenhdr[32];
    int lh = snprintf(lenhdr, sizeof(lenhdr), "$4\r\nEVAL\r\n$%zu\r\n", s->sc_len);
    size_t total = head + (size_t)lh + s->sc_len + 2 + (q->rq_cmdlen - skip);
    req_t *nq = req_get(r);
    char *ncmd = malloc(total);
    if (!nq || !ncmd) {
        free(ncmd);
        free(nq);
        if (q->rq_cb)
            q->rq_cb(r, NULL, "out of memory retrying EVAL", q->rq_opaque);
        return;
    }
    char *o = ncmd;
    memcpy(o, cmd, head);
    o += head;
    memcpy(o, lenhdr, (size_t)lh);
    o += lh;
    memcpy(o, s->sc_src, s->sc_len);
    o += s->sc_len;
    memcpy(o, "\r\n", 2);
    o += 2;
    memcpy(o, cmd + skip, q->rq_cmdlen - skip);
    nq->rq_kind = REQ_USER;
    nq->rq_cb = q->rq_cb;
    nq->rq_opaque = q->rq_opaque;
    msm_log(MSM_LOG_DEBUG, FAC, "NOSCRIPT for %s: sending EVAL", s->sc_sha);
    issue(r, nq, ncmd, (int)total);
}

static void on_reply(redisAsyncContext *ac, void *reply_, void *privdata)
{
    msm_redis_t *r = ac->data;
    req_t *q = privdata;
    redisReply *reply = reply_;
    if (q->rq_cancelled) {
        req_put(r, q);
        return;
    }
    list_remove(&r->rd_inflight, q);
    const char *err = NULL;
    if (reply) {
        r->rd_stats.replies++;
        r->rd_progress_ms = now_ms(r);
    } else {
        if (!r->rd_drop_reason) {
            snprintf(r->rd_drop_buf, sizeof(r->rd_drop_buf), "connection lost: %s",
                     ac->errstr && *ac->errstr ? ac->errstr : "closed");
            r->rd_drop_reason = r->rd_drop_buf;
        }
        err = r->rd_drop_reason;
        r->rd_stats.failed++;
    }
    switch (q->rq_kind) {
    case REQ_HANDSHAKE:
        handshake_reply(r, q, reply);
        break;
    case REQ_EVALSHA:
        if (reply && reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "NOSCRIPT", 8) == 0) {
            eval_retry(r, q);
            break;
        }
        /* fall through */
    default:
        if (q->rq_cb)
            q->rq_cb(r, reply, err, q->rq_opaque);
        break;
    }
    req_put(r, q);
    /* A master demoted by a failover answers writes READONLY: find the new one. */
    if (r->rd_url.sentinels && reply && reply->type == REDIS_REPLY_ERROR &&
        strncmp(reply->str, "READONLY", 8) == 0 && r->rd_ac && !r->rd_closing)
        drop(r, "the server is a replica now (failover): asking the Sentinels again");
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    msm_redis_t *r = ac->data;
    if (status != REDIS_OK && !r->rd_drop_reason) {
        snprintf(r->rd_drop_buf, sizeof(r->rd_drop_buf), "connect failed: %s",
                 ac->c.errstr[0] ? ac->c.errstr : "error");
        r->rd_drop_reason = r->rd_drop_buf;
    }
}

static void send_handshake(msm_redis_t *r, int argc, const char **argv, int fatal)
{
    req_t *q = req_get(r);
    if (!q) {
        drop(r, "out of memory");
        return;
    }
    q->rq_kind = REQ_HANDSHAKE;
    q->rq_fatal = (uint8_t)fatal;
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, NULL);
    r->rd_handshake_left++;
    issue(r, q, cmd, len);
}

/* Asks the Sentinels, in order, for the master's address. Blocks the loop up to 500 ms
 * per Sentinel that does not answer: it runs only when (re)connecting. @returns 0 or -1
 * with the reason in r->rd_last_err. */
static int sentinel_discover(msm_redis_t *r)
{
    char list[sizeof(r->rd_url.buf)], *save = NULL;
    snprintf(list, sizeof(list), "%s", r->rd_url.sentinels);
    struct timeval tv = {.tv_sec = 0, .tv_usec = 500 * 1000};
    snprintf(r->rd_last_err, sizeof(r->rd_last_err), "no Sentinel answered");
    for (char *h = strtok_r(list, ",", &save); h; h = strtok_r(NULL, ",", &save)) {
        char *colon = strrchr(h, ':');
        *colon = '\0';
        redisContext *c = redisConnectWithTimeout(h, atoi(colon + 1), tv);
        redisReply *rep = NULL;
        if (c && !c->err && redisSetTimeout(c, tv) == REDIS_OK)
            rep = redisCommand(c, "SENTINEL get-master-addr-by-name %s", r->rd_url.master);
        int ok = rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
                 rep->element[0]->type == REDIS_REPLY_STRING &&
                 rep->element[1]->type == REDIS_REPLY_STRING;
        if (ok) {
            int port = atoi(rep->element[1]->str);
            if (strcmp(r->rd_master_host, rep->element[0]->str) != 0 || port != r->rd_master_port)
                msm_log(MSM_LOG_INFO, FAC, "%s%sSentinel %s:%s: master %s is %s:%d",
                        r->rd_name ? r->rd_name : "", r->rd_name ? ": " : "", h, colon + 1,
                        r->rd_url.master, rep->element[0]->str, port);
            snprintf(r->rd_master_host, sizeof(r->rd_master_host), "%s", rep->element[0]->str);
            r->rd_master_port = port;
        } else if (rep && rep->type == REDIS_REPLY_NIL) {
            snprintf(r->rd_last_err, sizeof(r->rd_last_err), "Sentinel %s:%s knows no master %s",
                     h, colon + 1, r->rd_url.master);
        }
        if (rep)
            freeReplyObject(rep);
        if (c)
            redisFree(c);
        if (ok) {
            r->rd_url.host = r->rd_master_host;
            r->rd_url.port = r->rd_master_port;
            return 0;
        }
    }
    return -1;
}

static void connect_start(msm_redis_t *r)
{
    r->rd_drop_reason = NULL;
    r->rd_handshake_left = 0;
    if (r->rd_url.sentinels && sentinel_discover(r) != 0) {
        if (!r->rd_down_logged) {
            msm_log(MSM_LOG_WARN, FAC, "%s%smaster %s: %s; retrying with backoff",
                    r->rd_name ? r->rd_name : "", r->rd_name ? ": " : "", r->rd_url.master,
                    r->rd_last_err);
            r->rd_down_logged = 1;
        }
        schedule_reconnect(r);
        return;
    }
    redisAsyncContext *ac = r->rd_tunnel
                                ? redisAsyncConnectUnix(msm_tls_tunnel_path(r->rd_tunnel))
                                : redisAsyncConnect(r->rd_url.host, r->rd_url.port);
    if (!ac || ac->err) {
        snprintf(r->rd_last_err, sizeof(r->rd_last_err), "%s",
                 ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        if (!r->rd_down_logged) {
            msm_log(MSM_LOG_WARN, FAC, "cannot connect to %s:%d: %s; retrying with backoff",
                    r->rd_url.host, r->rd_url.port, r->rd_last_err);
            r->rd_down_logged = 1;
        }
        schedule_reconnect(r);
        return;
    }
    r->rd_ac = ac;
    r->rd_fd = ac->c.fd;
    r->rd_ev_mask = 0;
    ac->data = r;
    ac->ev.data = r;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    r->rd_state = ST_CONNECTING;
    redisAsyncSetConnectCallback(ac, on_connect);
    msm_loop_timer_start(r->rd_loop, &r->rd_t_connect, r->rd_connect_timeout_ms,
                         on_connect_timer, r);
    /* The handshake goes first in the output buffer; commands issued while connecting
     * queue behind it. */
    if (r->rd_url.password) {
        const char *a[3] = {"AUTH", r->rd_url.user, r->rd_url.password};
        if (r->rd_url.user)
            send_handshake(r, 3, a, 1);
        else {
            a[1] = r->rd_url.password;
            send_handshake(r, 2, a, 1);
        }
    }
    if (r->rd_url.db) {
        char db[16];
        snprintf(db, sizeof(db), "%d", r->rd_url.db);
        const char *a[2] = {"SELECT", db};
        send_handshake(r, 2, a, 1);
    }
    if (r->rd_name) {
        const char *a[3] = {"CLIENT", "SETNAME", r->rd_name};
        send_handshake(r, 3, a, 0);
    }
    if (r->rd_handshake_left == 0) {
        const char *a[1] = {"PING"};
        send_handshake(r, 1, a, 1);
    }
}

static void on_reconnect_timer(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    msm_redis_t *r = opaque;
    if (!r->rd_closing && !r->rd_ac)
        connect_start(r);
}

static void schedule_reconnect(msm_redis_t *r)
{
    uint64_t d = r->rd_backoff_ms ? r->rd_backoff_ms : 1;
    uint64_t delay = d / 2 + next_rand(r) % (d - d / 2 + 1);
    r->rd_backoff_ms = d * 2 > r->rd_backoff_max_ms ? r->rd_backoff_max_ms : d * 2;
    msm_loop_timer_start(r->rd_loop, &r->rd_t_reconnect, delay, on_reconnect_timer, r);
}

/* ---- public API ---- */

msm_redis_t *msm_redis_new(msm_loop_t *loop, const msm_redis_conf_t *conf, char *errbuf,
                           size_t errbuf_size)
{
    msm_redis_t *r = calloc(1, sizeof(*r));
    if (!r) {
        snprintf(errbuf, errbuf_size, "out of memory");
        return NULL;
    }
    r->rd_loop = loop;
    r->rd_fd = -1;
    msm_flush_init(&r->rd_flush, on_flush, r);
    msm_timer_init(&r->rd_t_reconnect);
    msm_timer_init(&r->rd_t_connect);
    msm_timer_init(&r->rd_t_timeout);
    msm_timer_init(&r->rd_t_fail);
    if (msm_redis_url_parse(conf->url, &r->rd_url, errbuf, errbuf_size) != MSM_OK)
        goto fail;
    r->rd_ns = strdup(conf->ns ? conf->ns : "msm");
    if (!r->rd_ns || (conf->client_name && !(r->rd_name = strdup(conf->client_name)))) {
        snprintf(errbuf, errbuf_size, "out of memory");
        goto fail;
    }
    if (r->rd_name && strpbrk(r->rd_name, " \t\r\n")) {
        snprintf(errbuf, errbuf_size, "redis client name must not contain spaces");
        goto fail;
    }
    r->rd_connect_timeout_ms = conf->connect_timeout_ms ? conf->connect_timeout_ms : 2000;
    r->rd_command_timeout_ms = conf->command_timeout_ms ? conf->command_timeout_ms : 5000;
    r->rd_backoff_min_ms = conf->backoff_min_ms ? conf->backoff_min_ms : 100;
    r->rd_backoff_max_ms = conf->backoff_max_ms ? conf->backoff_max_ms : 5000;
    if (r->rd_backoff_max_ms < r->rd_backoff_min_ms)
        r->rd_backoff_max_ms = r->rd_backoff_min_ms;
    r->rd_backoff_ms = r->rd_backoff_min_ms;
    if (r->rd_url.tls) {
        msm_tls_tunnel_conf_t tc = {.host = r->rd_url.host,
                                    .port = r->rd_url.port,
                                    .ca_file = r->rd_url.tls_ca,
                                    .cert_file = r->rd_url.tls_cert,
                                    .key_file = r->rd_url.tls_key,
                                    .timeout_ms = r->rd_connect_timeout_ms,
                                    .name = r->rd_name ? r->rd_name : "redis"};
        if (!(r->rd_tunnel = msm_tls_tunnel_new(&tc, errbuf, errbuf_size)))
            goto fail;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    r->rd_rand = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)(uintptr_t)r ^ (uint64_t)getpid();
    if (!r->rd_rand)
        r->rd_rand = 88172645463325252ull;
    connect_start(r);
    return r;
fail:
    msm_tls_tunnel_free(r->rd_tunnel);
    free(r->rd_ns);
    free(r->rd_name);
    free(r);
    return NULL;
}

void msm_redis_free(msm_redis_t *r)
{
    if (!r || r->rd_closing)
        return;
    r->rd_closing = 1;
    r->rd_state_cb = NULL;
    enter(r);
    msm_loop_timer_stop(r->rd_loop, &r->rd_t_reconnect);
    msm_loop_timer_stop(r->rd_loop, &r->rd_t_connect);
    msm_loop_timer_stop(r->rd_loop, &r->rd_t_timeout);
    msm_loop_timer_stop(r->rd_loop, &r->rd_t_fail);
    /* Every callback runs now, in order, even when hiredis must finish later (we may be
     * inside one of its callbacks): hiredis then only hands the requests back. */
    req_t *q;
    while ((q = r->rd_inflight.head)) {
        list_remove(&r->rd_inflight, q);
        q->rq_cancelled = 1;
        r->rd_stats.failed++;
        if (q->rq_kind != REQ_HANDSHAKE && q->rq_cb)
            q->rq_cb(r, NULL, "client closed", q->rq_opaque);
    }
    while ((q = r->rd_failq.head)) {
        list_remove(&r->rd_failq, q);
        r->rd_stats.failed++;
        if (q->rq_cb)
            q->rq_cb(r, NULL, fail_text(r, q->rq_fail), q->rq_opaque);
        req_put(r, q);
    }
    if (r->rd_ac)
        drop(r, "client closed");
    r->rd_free_pending = 1;
    leave(r);
}

int msm_redis_connected(const msm_redis_t *r)
{
    return r->rd_state == ST_UP;
}

void msm_redis_set_state_cb(msm_redis_t *r, msm_redis_state_cb *cb, void *opaque)
{
    r->rd_state_cb = cb;
    r->rd_state_opaque = opaque;
}

msm_loop_t *msm_redis_loop(const msm_redis_t *r)
{
    return r->rd_loop;
}

void msm_redis_stats(const msm_redis_t *r, msm_redis_stats_t *out)
{
    *out = r->rd_stats;
}

size_t msm_redis_pending(const msm_redis_t *r)
{
    return r->rd_inflight.n + r->rd_failq.n;
}

int msm_redis_vcommand(msm_redis_t *r, msm_redis_reply_cb *cb, void *opaque, const char *fmt,
                       va_list ap)
{
    if (r->rd_closing)
        return MSM_ERR_SHUTDOWN;
    req_t *q = req_get(r);
    if (!q)
        return MSM_ERR_NOMEM;
    q->rq_cb = cb;
    q->rq_opaque = opaque;
    char *cmd = NULL;
    int len = redisvFormatCommand(&cmd, fmt, ap);
    issue(r, q, cmd, len);
    return MSM_OK;
}

int msm_redis_command(msm_redis_t *r, msm_redis_reply_cb *cb, void *opaque, const char *fmt,
                      ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = msm_redis_vcommand(r, cb, opaque, fmt, ap);
    va_end(ap);
    return rc;
}

int msm_redis_command_blocking_argv(msm_redis_t *r, uint32_t extra_timeout_ms,
                                    msm_redis_reply_cb *cb, void *opaque, int argc,
                                    const char **argv, const size_t *argvlen)
{
    if (r->rd_closing)
        return MSM_ERR_SHUTDOWN;
    req_t *q = req_get(r);
    if (!q)
        return MSM_ERR_NOMEM;
    q->rq_cb = cb;
    q->rq_opaque = opaque;
    q->rq_extra_ms = extra_timeout_ms;
    char *cmd = NULL;
    int len = argc > 0 ? redisFormatCommandArgv(&cmd, argc, argv, argvlen) : -1;
    issue(r, q, cmd, len);
    return MSM_OK;
}

int msm_redis_command_argv(msm_redis_t *r, msm_redis_reply_cb *cb, void *opaque, int argc,
                           const char **argv, const size_t *argvlen)
{
    return msm_redis_command_blocking_argv(r, 0, cb, opaque, argc, argv, argvlen);
}

long long msm_redis_reply_int(const redisReply *reply, long long absent)
{
    if (reply && reply->type == REDIS_REPLY_INTEGER)
        return reply->integer;
    if (reply && reply->type == REDIS_REPLY_STRING)
        return strtoll(reply->str, NULL, 10);
    return absent;
}

const char *msm_redis_reply_err(const redisReply *reply, const char *err)
{
    if (err)
        return err;
    if (!reply)
        return "no reply";
    if (reply->type == REDIS_REPLY_ERROR)
        return reply->str ? reply->str : "error";
    return NULL;
}

int msm_redis_key(const msm_redis_t *r, char *buf, size_t n, const char *fmt, ...)
{
    int a = snprintf(buf, n, "%s:", r->rd_ns);
    if (a < 0 || (size_t)a >= n)
        return MSM_ERR_TOOLARGE;
    va_list ap;
    va_start(ap, fmt);
    int b = vsnprintf(buf + a, n - (size_t)a, fmt, ap);
    va_end(ap);
    if (b < 0 || (size_t)a + (size_t)b >= n)
        return MSM_ERR_TOOLARGE;
    return a + b;
}

const char *msm_redis_namespace(const msm_redis_t *r)
{
    return r->rd_ns;
}

/* ---- scripts ---- */

msm_redis_script_t *msm_redis_script_new(const char *lua)
{
    msm_redis_script_t *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->sc_len = strlen(lua);
    s->sc_src = malloc(s->sc_len + 1);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!s->sc_src || !EVP_Digest(lua, s->sc_len, md, &mdlen, EVP_sha1(), NULL) || mdlen != 20)
        goto fail;
    memcpy(s->sc_src, lua, s->sc_len + 1);
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < 20; i++) {
        s->sc_sha[2 * i] = hex[md[i] >> 4];
        s->sc_sha[2 * i + 1] = hex[md[i] & 15];
    }
    s->sc_sha[40] = '\0';
    return s;
fail:
    free(s->sc_src);
    free(s);
    return NULL;
}

void msm_redis_script_free(msm_redis_script_t *s)
{
    if (!s)
        return;
    free(s->sc_src);
    free(s);
}

const char *msm_redis_script_sha(const msm_redis_script_t *s)
{
    return s->sc_sha;
}

/* CRC16-CCITT (XMODEM), the hash of Redis Cluster's key slots. */
static uint16_t crc16(const char *s, size_t n)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < n; i++) {
        crc ^= (uint16_t)((unsigned char)s[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (uint16_t)(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
    }
    return crc;
}

int msm_redis_key_slot(const char *key, size_t len)
{
    /* Only the hash tag counts: what lies between the first '{' and the first '}' after
     * it, when that is not empty. */
    const char *open = memchr(key, '{', len);
    if (open) {
        size_t rest = len - (size_t)(open + 1 - key);
        const char *close = memchr(open + 1, '}', rest);
        if (close && close > open + 1) {
            key = open + 1;
            len = (size_t)(close - key);
        }
    }
    return crc16(key, len) & 16383;
}

/* A script's keys must share one hash slot, or it fails on Redis Cluster (CROSSSLOT): the
 * check runs on every server, so a script that would fail there fails in every test. */
static int keys_one_slot(const msm_redis_t *r, int nkeys, const char **argv,
                         const size_t *argvlen)
{
    int slot = -1;
    for (int i = 0; i < nkeys; i++) {
        size_t len = argvlen ? argvlen[i] : strlen(argv[i]);
        int s = msm_redis_key_slot(argv[i], len);
        if (slot >= 0 && s != slot) {
            msm_log(MSM_LOG_ERROR, FAC, "%s%sa script's keys are in different hash slots: "
                    "%.*s (%d) and %.*s (%d)", r->rd_name ? r->rd_name : "",
                    r->rd_name ? ": " : "", (int)(argvlen ? argvlen[0] : strlen(argv[0])),
                    argv[0], slot, (int)len, argv[i], s);
            return 0;
        }
        slot = s;
    }
    return 1;
}

int msm_redis_eval(msm_redis_t *r, const msm_redis_script_t *s, msm_redis_reply_cb *cb,
                   void *opaque, int nkeys, int argc, const char **argv, const size_t *argvlen)
{
    if (r->rd_closing)
        return MSM_ERR_SHUTDOWN;
    if (argc < 0 || nkeys < 0 || nkeys > argc || !keys_one_slot(r, nkeys, argv, argvlen))
        return MSM_ERR_INVALID;
    const char *sv[16];
    size_t sl[16];
    const char **av = sv;
    size_t *al = sl;
    size_t n = (size_t)argc + 3;
    if (n > 16) {
        av = malloc(n * sizeof(*av));
        al = malloc(n * sizeof(*al));
        if (!av || !al) {
            free(av);
            free(al);
            return MSM_ERR_NOMEM;
        }
    }
    req_t *q = req_get(r);
    if (!q) {
        if (av != sv) {
            free(av);
            free(al);
        }
        return MSM_ERR_NOMEM;
    }
    char nk[16];
    snprintf(nk, sizeof(nk), "%d", nkeys);
    av[0] = "EVALSHA";
    av[1] = s->sc_sha;
    av[2] = nk;
    al[0] = 7;
    al[1] = 40;
    al[2] = strlen(nk);
    for (int i = 0; i < argc; i++) {
        av[3 + i] = argv[i];
        al[3 + i] = argvlen ? argvlen[i] : strlen(argv[i]);
    }
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, (int)n, av, al);
    if (av != sv) {
        free(av);
        free(al);
    }
    q->rq_kind = REQ_EVALSHA;
    q->rq_cb = cb;
    q->rq_opaque = opaque;
    q->rq_script = s;
    if (len > 0) {
        q->rq_cmd = cmd;
        q->rq_cmdlen = (size_t)len;
    }
    issue(r, q, cmd, len);
    return MSM_OK;
}
