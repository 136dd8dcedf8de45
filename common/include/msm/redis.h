/* SPDX-License-Identifier: MIT */
/* An asynchronous Redis client on the msm loop: hiredis 0.14's async API attached like
 * hiredis adapters/ae.h, plus what hiredis lacks there: URL parsing (AUTH, SELECT),
 * connect and command timeouts, reconnection with backoff, prompt failure while
 * disconnected, Lua scripts by SHA1 with a NOSCRIPT fallback, and namespaced keys.
 *
 * Threading: one client belongs to one loop; every function and callback runs on the
 * loop's thread. */
#ifndef MSM_REDIS_H
#define MSM_REDIS_H

#include "msm/loop.h"

#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

typedef struct msm_redis_s msm_redis_t;
typedef struct msm_redis_script_s msm_redis_script_t;

typedef struct {
    /** redis://[[user]:password@]host[:port][/db]; NULL = redis://127.0.0.1:6379. An IPv6
     *  host goes in brackets; "%XX" escapes are decoded in user and password. The host is
     *  resolved with getaddrinfo() (blocking): prefer addresses or /etc/hosts names.
     *  rediss://… is Redis over TLS, with the query options ssl_ca_certs=FILE (CAs to
     *  trust; default the system's), ssl_certfile=FILE and ssl_keyfile=FILE (a client
     *  certificate, for servers with tls-auth-clients); the server's certificate must name
     *  the host. Any other query option is an error.
     *  redis-sentinel://[[user]:password@]host:port[,host:port…]/MASTER[/db] asks the
     *  Sentinels for MASTER's address at every (re)connect, and reconnects when the server
     *  it is on answers READONLY (it was demoted by a failover). */
    const char *url;
    /** Key namespace for msm_redis_key(); NULL = "msm". */
    const char *ns;
    /** TCP connect plus AUTH/SELECT must finish within this; 0 = 2000 ms. */
    uint32_t connect_timeout_ms;
    /** The oldest in-flight command may wait this long for its reply (counted from when it
     *  was sent or from the previous reply, whichever is later); past it the connection is
     *  dropped, every pending command fails with a timeout error and the client
     *  reconnects. 0 = 5000 ms. */
    uint32_t command_timeout_ms;
    /** Reconnect delay: starts at min, doubles per failed attempt up to max, with jitter
     *  (each delay is drawn from [d/2, d]); 0 = 100 ms and 5000 ms. */
    uint32_t backoff_min_ms;
    uint32_t backoff_max_ms;
    /** Name for logs and CLIENT SETNAME (optional, no spaces). */
    const char *client_name;
} msm_redis_conf_t;

/** A parsed redis:// URL (strings point into @c buf). */
typedef struct {
    char buf[512];
    const char *host;
    int port;
    const char *user;     /**< NULL when absent */
    const char *password; /**< NULL when absent */
    int db;
    int tls;              /**< rediss:// */
    const char *sentinels; /**< redis-sentinel://: "host:port,host:port", else NULL */
    const char *master;    /**< redis-sentinel://: the master's name */
    const char *tls_ca;   /**< ssl_ca_certs, ssl_certfile, ssl_keyfile: NULL when absent */
    const char *tls_cert;
    const char *tls_key;
} msm_redis_url_t;

/**
 * Reply to one command. Exactly one of @p reply and @p err is non-NULL:
 * @p reply is any reply, REDIS_REPLY_ERROR included (see msm_redis_reply_err());
 * @p err says why no reply came (not connected, connection lost, timeout, client freed).
 * @remark both are borrowed for the duration of the call: copy what you keep.
 */
typedef void msm_redis_reply_cb(msm_redis_t *r, redisReply *reply, const char *err,
                                void *opaque);

/** Connection state changes: @p connected 1 once AUTH/SELECT are done; 0 when a working
 *  connection is lost (with @p reason). Not called for failed attempts while down. */
typedef void msm_redis_state_cb(msm_redis_t *r, int connected, const char *reason,
                                void *opaque);

/** Counters since msm_redis_new() (for metrics and tests). */
typedef struct {
    uint64_t commands;     /**< commands accepted (including ones failed while down) */
    uint64_t replies;      /**< replies received */
    uint64_t failed;       /**< commands completed with @c err (no reply) */
    uint64_t write_events; /**< socket writes driven by the loop (pipelining shows here) */
    uint64_t connects;     /**< connections that reached the connected state */
    uint64_t disconnects;  /**< connected connections lost or dropped */
    uint64_t timeouts;     /**< connections dropped for a command or connect timeout */
} msm_redis_stats_t;

/**
 * @brief Parses @p url (see msm_redis_conf_t.url) into @p out.
 * @returns MSM_OK, or MSM_ERR_PARSE with the reason in @p errbuf.
 */
int msm_redis_url_parse(const char *url, msm_redis_url_t *out, char *errbuf, size_t errbuf_size);

/**
 * @brief @p url with its password replaced by @p password (percent-encoded; the user, if
 * any, kept): for a password read from a file (redis.password_file).
 * @returns MSM_OK, MSM_ERR_PARSE (not a redis:// URL) or MSM_ERR_INVALID (@p n too small).
 */
int msm_redis_url_with_password(const char *url, const char *password, char *out, size_t n);

/**
 * @brief Creates a client and starts connecting (non-blocking; AUTH and SELECT from the
 * URL are sent first on every connection). Commands may be issued right away: they queue
 * behind the handshake while the first connection is being made.
 * @returns NULL with the reason in @p errbuf when the configuration is invalid. A server
 * that is down is not an error: the client keeps retrying with backoff.
 * @remark the conf strings are copied.
 */
msm_redis_t *msm_redis_new(msm_loop_t *loop, const msm_redis_conf_t *conf, char *errbuf,
                           size_t errbuf_size);

/**
 * @brief Closes the connection and frees @p r. Every pending command's callback runs first,
 * inside this call, with err "client closed"; commands issued from those callbacks are
 * refused (MSM_ERR_SHUTDOWN). Safe to call from any of this client's callbacks.
 */
void msm_redis_free(msm_redis_t *r);

/** @brief 1 when connected (handshake done), 0 otherwise. */
int msm_redis_connected(const msm_redis_t *r);

/** @brief Sets (or clears, with NULL) the state-change callback. */
void msm_redis_set_state_cb(msm_redis_t *r, msm_redis_state_cb *cb, void *opaque);

/** @brief The loop @p r runs on. */
msm_loop_t *msm_redis_loop(const msm_redis_t *r);

/** @brief Copies the counters into @p out. */
void msm_redis_stats(const msm_redis_t *r, msm_redis_stats_t *out);

/** @brief Commands sent or queued whose reply has not arrived. */
size_t msm_redis_pending(const msm_redis_t *r);

/**
 * @brief Sends a command formatted like hiredis redisCommand() ("%s", "%b" with a length,
 * ...). Commands issued in the same loop turn go out together in one write (pipelining).
 * @param cb called exactly once (may be NULL to ignore the reply): with the reply, or with
 * an error, never from inside this call. While disconnected the command fails on the next
 * loop turn ("not connected"); it is never held back waiting for a reconnect.
 * @returns MSM_OK when @p cb will be called; MSM_ERR_SHUTDOWN (during msm_redis_free) or
 * MSM_ERR_NOMEM otherwise, and then @p cb is not called.
 */
int msm_redis_command(msm_redis_t *r, msm_redis_reply_cb *cb, void *opaque, const char *fmt,
                      ...);

/** @brief msm_redis_command() with a va_list. */
int msm_redis_vcommand(msm_redis_t *r, msm_redis_reply_cb *cb, void *opaque, const char *fmt,
                       va_list ap);

/**
 * @brief Sends a command given as @p argc binary-safe arguments (copied before return).
 * @p argvlen may be NULL for NUL-terminated strings. Otherwise as msm_redis_command().
 */
int msm_redis_command_argv(msm_redis_t *r, msm_redis_reply_cb *cb, void *opaque, int argc,
                           const char **argv, const size_t *argvlen);

/**
 * @brief As msm_redis_command_argv() for a command the server may hold on purpose
 * (XREADGROUP ... BLOCK ms, BLPOP): its reply may take @p extra_timeout_ms longer than the
 * command timeout before the connection counts as stuck. Commands sent after it on the
 * same connection wait behind it: give blocking commands their own client.
 */
int msm_redis_command_blocking_argv(msm_redis_t *r, uint32_t extra_timeout_ms,
                                    msm_redis_reply_cb *cb, void *opaque, int argc,
                                    const char **argv, const size_t *argvlen);

/**
 * @brief The error text of a reply: @p err when set, the message of a REDIS_REPLY_ERROR,
 * or NULL for a good reply. Lets a callback treat both kinds of failure alike.
 */
const char *msm_redis_reply_err(const redisReply *reply, const char *err);

/**
 * @brief The integer of an integer reply, or of a string reply holding one (HGET, a Lua
 * number returned as text); @p absent for NULL, nil and every other reply type.
 */
long long msm_redis_reply_int(const redisReply *reply, long long absent);

/**
 * @brief Writes "<ns>:<formatted rest>" into @p buf.
 * @returns the length written, or MSM_ERR_TOOLARGE when it does not fit in @p n.
 */
int msm_redis_key(const msm_redis_t *r, char *buf, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/** @brief The key namespace (borrowed). */
const char *msm_redis_namespace(const msm_redis_t *r);

/**
 * @brief Prepares a Lua script: copies @p lua and computes its SHA1.
 * @returns NULL when out of memory.
 */
msm_redis_script_t *msm_redis_script_new(const char *lua);

/** @brief Frees @p s. @remark no msm_redis_eval() of @p s may still be pending. */
void msm_redis_script_free(msm_redis_script_t *s);

/** @brief The script's SHA1 as 40 lowercase hex digits (borrowed). */
const char *msm_redis_script_sha(const msm_redis_script_t *s);

/**
 * @brief The Redis Cluster hash slot of @p key (0..16383): CRC16 of the key, or of its hash
 * tag (the text between the first '{' and the next '}', when not empty).
 */
int msm_redis_key_slot(const char *key, size_t len);

/**
 * @brief Runs @p s with EVALSHA; when the server answers NOSCRIPT (script cache flushed,
 * server restarted) it is sent again with EVAL and @p cb sees only that second reply.
 * @param nkeys how many of the @p argc arguments are keys (they come first); they must
 *        share one hash slot (msm_redis_key_slot()), as Redis Cluster requires, whatever
 *        the server: keys in two slots are MSM_ERR_INVALID, logged
 * @remark the arguments are copied; @p s must stay alive until @p cb has run. A retried
 * EVAL goes to the end of the pipeline, after commands issued since.
 * @returns as msm_redis_command().
 */
int msm_redis_eval(msm_redis_t *r, const msm_redis_script_t *s, msm_redis_reply_cb *cb,
                   void *opaque, int nkeys, int argc, const char **argv, const size_t *argvlen);

#endif
