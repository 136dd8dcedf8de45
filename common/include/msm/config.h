/* SPDX-License-Identifier: MIT */
/* Table-driven configuration (redis config.c, librdkafka rdkafka_conf.c): each daemon lists
 * its settings once, in an array of msm_conf_def_t, and the table fills the daemon's own
 * struct (by offsetof), checks types and ranges, generates --help and the masked JSON for
 * /debug/info. Precedence, lowest first: built-in default < JSON file (--config FILE or
 * MSM_CONFIG) < environment MSM_<NAME> < command-line flag.
 *
 *     typedef struct { msm_common_conf_t common; int workers; char *token; } fe_conf_t;
 *     static const msm_conf_def_t fe_conf[] = {
 *         MSM_CONF_COMMON(fe_conf_t, common, 8080),
 *         MSM_CONF_INT("workers", fe_conf_t, workers, 4, 1, 64, "worker threads"),
 *         MSM_CONF_SECRET_STR("auth.token", fe_conf_t, token, NULL, "bearer token"),
 *     };
 *     fe_conf_t conf;
 *     int rc = msm_conf_load_argv(fe_conf, MSM_CONF_COUNT(fe_conf), &conf, argc, argv,
 *                                 err, sizeof(err));
 *
 * The loaded struct is then treated as immutable and passed explicitly: no globals. */
#ifndef MSM_CONFIG_H
#define MSM_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* jansson's json_t, declared only: including msm/config.h does not require jansson. */
struct json_t;

/** Kinds of setting. */
typedef enum {
    MSM_CONF_T_INT,    /**< integer in [min, max]; field: any C integer type */
    MSM_CONF_T_BOOL,   /**< true/false; field: bool or int */
    MSM_CONF_T_DOUBLE, /**< finite double in [min, max]; field: double */
    MSM_CONF_T_STR,    /**< string; field: char * (malloc'd, freed by msm_conf_free) */
    MSM_CONF_T_ENUM,   /**< one of a NULL-terminated list of words; field: int (the index)
                            or const char * (the word, static) */
    MSM_CONF_T_PROPS,  /**< pass-through "key=value" properties (e.g. librdkafka's); field:
                            char ** NULL-terminated array or NULL (freed by msm_conf_free) */
} msm_conf_type_t;

/** The C type of the field a definition fills (found by _Generic in the macros). */
typedef enum {
    MSM__CONF_S_NONE = 0,
    MSM__CONF_S_BOOL,
    MSM__CONF_S_CHAR,
    MSM__CONF_S_SCHAR,
    MSM__CONF_S_UCHAR,
    MSM__CONF_S_SHORT,
    MSM__CONF_S_USHORT,
    MSM__CONF_S_INT,
    MSM__CONF_S_UINT,
    MSM__CONF_S_LONG,
    MSM__CONF_S_ULONG,
    MSM__CONF_S_LLONG,
    MSM__CONF_S_ULLONG,
    MSM__CONF_S_DOUBLE,
    MSM__CONF_S_STR,  /* char * */
    MSM__CONF_S_CSTR, /* const char * */
    MSM__CONF_S_PROPS /* char ** */
} msm__conf_store_t;

/** Flags of a definition. */
#define MSM_CONF_F_SECRET 0x1 /**< shown as "***" by msm_conf_to_json() */

/** One setting. Build these with the MSM_CONF_* macros, not by hand. */
typedef struct msm_conf_def_s {
    const char *cd_name;  /**< dotted, e.g. "http.port"; flag --http.port, env MSM_HTTP_PORT */
    msm_conf_type_t cd_type;
    msm__conf_store_t cd_store;
    unsigned cd_flags;
    size_t cd_offset;     /**< offsetof the field in the daemon's struct */
    int64_t cd_int_def, cd_int_min, cd_int_max;
    double cd_dbl_def, cd_dbl_min, cd_dbl_max;
    const char *cd_str_def;          /**< STR and ENUM default (ENUM: one of the choices) */
    const char *const *cd_choices;   /**< ENUM words, NULL-terminated */
    const char *cd_help;
} msm_conf_def_t;

#define MSM_CONF_COUNT(defs) (sizeof(defs) / sizeof((defs)[0]))

/* The field's C type picks the store; a field of the wrong type fails to compile. */
#define MSM__CONF_FIELD(type, field) (((type *)0)->field)
#define MSM__CONF_INT_STORE(type, field)                                                           \
    _Generic(MSM__CONF_FIELD(type, field),                                                         \
        char: MSM__CONF_S_CHAR,                                                                    \
        signed char: MSM__CONF_S_SCHAR,                                                            \
        unsigned char: MSM__CONF_S_UCHAR,                                                          \
        short: MSM__CONF_S_SHORT,                                                                  \
        unsigned short: MSM__CONF_S_USHORT,                                                        \
        int: MSM__CONF_S_INT,                                                                      \
        unsigned int: MSM__CONF_S_UINT,                                                            \
        long: MSM__CONF_S_LONG,                                                                    \
        unsigned long: MSM__CONF_S_ULONG,                                                          \
        long long: MSM__CONF_S_LLONG,                                                              \
        unsigned long long: MSM__CONF_S_ULLONG)
#define MSM__CONF_BOOL_STORE(type, field)                                                          \
    _Generic(MSM__CONF_FIELD(type, field), bool: MSM__CONF_S_BOOL, int: MSM__CONF_S_INT)
#define MSM__CONF_DOUBLE_STORE(type, field)                                                        \
    _Generic(MSM__CONF_FIELD(type, field), double: MSM__CONF_S_DOUBLE)
#define MSM__CONF_STR_STORE(type, field)                                                           \
    _Generic(MSM__CONF_FIELD(type, field), char *: MSM__CONF_S_STR)
#define MSM__CONF_ENUM_STORE(type, field)                                                          \
    _Generic(MSM__CONF_FIELD(type, field), int: MSM__CONF_S_INT, const char *: MSM__CONF_S_CSTR)
#define MSM__CONF_PROPS_STORE(type, field)                                                         \
    _Generic(MSM__CONF_FIELD(type, field), char **: MSM__CONF_S_PROPS)

/** An integer in [min, max] (both int64_t; they must fit the field's type). */
#define MSM_CONF_INT(name, type, field, def, min, max, help)                                       \
    {.cd_name = (name), .cd_type = MSM_CONF_T_INT, .cd_store = MSM__CONF_INT_STORE(type, field),   \
     .cd_offset = offsetof(type, field), .cd_int_def = (def), .cd_int_min = (min),                 \
     .cd_int_max = (max), .cd_help = (help)}

/** A boolean: flags --name, --name=true|false, --no-name; env/file true/false/1/0/yes/no. */
#define MSM_CONF_BOOL(name, type, field, def, help)                                                \
    {.cd_name = (name), .cd_type = MSM_CONF_T_BOOL, .cd_store = MSM__CONF_BOOL_STORE(type, field), \
     .cd_offset = offsetof(type, field), .cd_int_def = (def) ? 1 : 0, .cd_int_min = 0,             \
     .cd_int_max = 1, .cd_help = (help)}

/** A finite double in [min, max]. */
#define MSM_CONF_DOUBLE(name, type, field, def, min, max, help)                                    \
    {.cd_name = (name), .cd_type = MSM_CONF_T_DOUBLE,                                              \
     .cd_store = MSM__CONF_DOUBLE_STORE(type, field), .cd_offset = offsetof(type, field),          \
     .cd_dbl_def = (def), .cd_dbl_min = (min), .cd_dbl_max = (max), .cd_help = (help)}

/** A string (the default may be NULL: unset). The field gets a malloc'd copy. */
#define MSM_CONF_STR(name, type, field, def, help)                                                 \
    {.cd_name = (name), .cd_type = MSM_CONF_T_STR, .cd_store = MSM__CONF_STR_STORE(type, field),   \
     .cd_offset = offsetof(type, field), .cd_str_def = (def), .cd_help = (help)}

/** A string never shown by msm_conf_to_json() (passwords, tokens, HMAC secrets). */
#define MSM_CONF_SECRET_STR(name, type, field, def, help)                                          \
    {.cd_name = (name), .cd_type = MSM_CONF_T_STR, .cd_store = MSM__CONF_STR_STORE(type, field),   \
     .cd_flags = MSM_CONF_F_SECRET, .cd_offset = offsetof(type, field), .cd_str_def = (def),       \
     .cd_help = (help)}

/** One word of @p choices (NULL-terminated, matched case-insensitively). An int field
 *  receives the index, a const char * field the word from @p choices. */
#define MSM_CONF_ENUM(name, type, field, def, choices, help)                                       \
    {.cd_name = (name), .cd_type = MSM_CONF_T_ENUM, .cd_store = MSM__CONF_ENUM_STORE(type, field), \
     .cd_offset = offsetof(type, field), .cd_str_def = (def), .cd_choices = (choices),             \
     .cd_help = (help)}

/** Pass-through properties. File: an object {"linger.ms": 5, ...}; environment:
 *  "k=v,k=v"; flags: --name k=v (repeatable) or --name.k=v. Later sources replace a key. */
#define MSM_CONF_PROPS(name, type, field, help)                                                    \
    {.cd_name = (name), .cd_type = MSM_CONF_T_PROPS,                                               \
     .cd_store = MSM__CONF_PROPS_STORE(type, field), .cd_offset = offsetof(type, field),           \
     .cd_help = (help)}

/* ---- settings every daemon shares ---- */

/** Words of the shared enums; indexes match msm_stream_backend_t, msm_log_level_t and
 *  msm_log_format_t. */
extern const char *const msm_conf_log_backends[]; /* "redis", "kafka" */
extern const char *const msm_conf_log_levels[];   /* "debug", "info", "warn", "error" */
extern const char *const msm_conf_log_formats[];  /* "logfmt", "json" */

/** Settings every daemon has; embed one in the daemon's struct and MSM_CONF_COMMON in its
 *  table. Environment names MSM_REDIS_URL, MSM_NAMESPACE, MSM_LOG_BACKEND and
 *  MSM_KAFKA_BROKERS are part of the public contract (API.md). */
typedef struct {
    char *redis_url;     /**< redis.url, default redis://127.0.0.1:6379 */
    char *redis_password_file; /**< redis.password_file: the password's file, or NULL */
    int redis_min_replicas_acks; /**< redis.min_replicas_acks: WAIT after each log append */
    int redis_wait_timeout_ms;   /**< redis.wait_timeout_ms: how long WAIT may take */
    char *ns;            /**< namespace: key/stream prefix, default "msm" */
    int log_backend;     /**< log.backend: msm_stream_backend_t (0 redis, 1 kafka) */
    int log_append_timeout_ms; /**< log.append_timeout_ms: an append not durable by then fails */
    int log_lease_ms;    /**< log.lease_ms: unacknowledged entries go to another member after */
    int log_lag_interval_ms; /**< log.lag_interval_ms: consumers' lag measured this often */
    char *kafka_brokers; /**< kafka.brokers, default 127.0.0.1:9092 */
    char **kafka_props;  /**< kafka.props: extra librdkafka "key=value" (NULL-terminated) */
    int kafka_replication_factor;  /**< kafka.replication_factor of topics msm creates */
    int kafka_min_insync_replicas; /**< kafka.min_insync_replicas of topics msm creates */
    long long kafka_retention_ms;  /**< kafka.retention_ms of topics msm creates */
    char *http_bind;     /**< http.bind, default 0.0.0.0 */
    int http_port;       /**< http.port, the daemon's own default */
    long long http_max_body_bytes; /**< http.max_body_bytes: larger request bodies get 413 */
    int http_request_deadline_ms;  /**< http.request_deadline_ms: request line to last byte */
    int http_max_connections;      /**< http.max_connections: open client connections */
    int http_max_connections_per_ip; /**< http.max_connections_per_ip: 0 = no cap */
    char *auth_tokens;   /**< auth.tokens: JSON file of principals (msm/auth.h), or NULL */
    char *tls_cert;      /**< tls.cert: PEM certificate file; "" = plain HTTP */
    char *tls_key;       /**< tls.key: its private key (PEM file) */
    char *tls_client_ca; /**< tls.client_ca: PEM CA file client certificates must chain to */
    int logging_level;   /**< logging.level: msm_log_level_t, default info */
    int logging_format;  /**< logging.format: msm_log_format_t, default logfmt */
} msm_common_conf_t;

/** The shared settings as table entries, for a msm_common_conf_t at @p member of @p type:
 *  the backends' (Redis, the log) and the serving ones (HTTP, TLS, auth, logging). */
#define MSM_CONF_COMMON(type, member, default_port)                                                \
    MSM_CONF_BACKENDS(type, member), MSM_CONF_SERVING(type, member, default_port)

/** The Redis and durable-log settings of msm_common_conf_t. */
#define MSM_CONF_BACKENDS(type, member)                                                            \
    MSM_CONF_STR("redis.url", type, member.redis_url, "redis://127.0.0.1:6379",                    \
                 "Redis URL: redis[s]://[[user]:password@]host:port[/db][?ssl_ca_certs=F&"       \
                 "ssl_certfile=F&ssl_keyfile=F] (rediss: TLS, docs/security.md)"),               \
    MSM_CONF_STR("redis.password_file", type, member.redis_password_file, NULL,                    \
                 "file whose first line is the Redis password (overrides redis.url's)"),         \
    MSM_CONF_INT("redis.min_replicas_acks", type, member.redis_min_replicas_acks, 0, 0, 16,        \
                 "log appends are durable only once this many replicas have them (WAIT; "        \
                 "log.backend redis)"),                                                            \
    MSM_CONF_INT("redis.wait_timeout_ms", type, member.redis_wait_timeout_ms, 1000, 1, 60000,      \
                 "fewer replicas than redis.min_replicas_acks after this fails the append"),       \
    MSM_CONF_STR("namespace", type, member.ns, "msm",                                              \
                 "prefix of every Redis key and log stream"),                                      \
    MSM_CONF_ENUM("log.backend", type, member.log_backend, "redis", msm_conf_log_backends,         \
                  "durable log: redis streams or kafka"),                                          \
    MSM_CONF_INT("log.append_timeout_ms", type, member.log_append_timeout_ms, 10000, 100, 600000,  \
                 "an append not durable after this fails (publish answers 503)"),                  \
    MSM_CONF_INT("log.lease_ms", type, member.log_lease_ms, 30000, 100, 3600000,                   \
                 "unacknowledged log entries of a silent member go to another after this"),        \
    MSM_CONF_INT("log.lag_interval_ms", type, member.log_lag_interval_ms, 10000, 0, 3600000,      \
                 "how often each consumer's lag (msm_log_consumer_lag) is measured (0: never)"),   \
    MSM_CONF_STR("kafka.brokers", type, member.kafka_brokers, "127.0.0.1:9092",                    \
                 "Kafka bootstrap servers (log.backend=kafka)"),                                   \
    MSM_CONF_INT("kafka.replication_factor", type, member.kafka_replication_factor, 0, 0, 32,      \
                 "replicas of each topic msm creates (0: the broker's default; use 3)"),           \
    MSM_CONF_INT("kafka.min_insync_replicas", type, member.kafka_min_insync_replicas, 0, 0, 32,    \
                 "min.insync.replicas of each topic msm creates (0: the broker's; use 2 of 3)"),   \
    MSM_CONF_INT("kafka.retention_ms", type, member.kafka_retention_ms, 0, -1,                     \
                 (long long)365 * 24 * 3600 * 1000,                                                \
                 "retention.ms of each topic msm creates (0: the broker's; -1: forever)"),         \
    MSM_CONF_PROPS("kafka.props", type, member.kafka_props,                                        \
                   "extra librdkafka properties, key=value")

/** The HTTP, TLS, auth and logging settings of msm_common_conf_t: all a tool that keeps no
 *  msm state needs (msm_daemon_new_serving()). */
#define MSM_CONF_SERVING(type, member, default_port)                                               \
    MSM_CONF_STR("http.bind", type, member.http_bind, "0.0.0.0", "HTTP listen address"),           \
    MSM_CONF_INT("http.port", type, member.http_port, (default_port), 0, 65535,                    \
                 "HTTP listen port (0: any free port)"),                                          \
    MSM_CONF_INT("http.max_body_bytes", type, member.http_max_body_bytes, 1024LL * 1024, 1024,     \
                 1024LL * 1024 * 1024, "largest request body; larger ones get 413"),               \
    MSM_CONF_INT("http.request_deadline_ms", type, member.http_request_deadline_ms, 30000, 100,    \
                 3600000, "a request not fully received this long after its request line (a new "   \
                 "connection: after accept) is dropped (slow clients)"),                                                        \
    MSM_CONF_INT("http.max_connections", type, member.http_max_connections, 1024, 1, 1000000,      \
                 "most client connections open at once"),                                          \
    MSM_CONF_INT("http.max_connections_per_ip", type, member.http_max_connections_per_ip, 0, 0,    \
                 1000000, "most connections open at once from one client address (0: no cap)"),    \
    MSM_CONF_STR("tls.cert", type, member.tls_cert, "",                                            \
                 "PEM certificate file: serve HTTPS only (with tls.key)"),                        \
    MSM_CONF_STR("tls.key", type, member.tls_key, "", "PEM private key file of tls.cert"),         \
    MSM_CONF_STR("tls.client_ca", type, member.tls_client_ca, "",                                  \
                 "PEM CA file: requests need a client certificate it signed (401 otherwise; "      \
                 "/healthz and /readyz stay open)"),                                               \
    MSM_CONF_STR("auth.tokens", type, member.auth_tokens, NULL,                                    \
                 "JSON file of principals [{name,token_sha256,scopes,publish_per_s}]: every "     \
                 "route but /healthz and /readyz then needs Authorization: Bearer"),              \
    MSM_CONF_ENUM("logging.level", type, member.logging_level, "info", msm_conf_log_levels,        \
                  "lowest level logged"),                                                          \
    MSM_CONF_ENUM("logging.format", type, member.logging_format, "logfmt",                         \
                  msm_conf_log_formats, "log line format")

/* ---- loading ---- */

/** msm_conf_load() results besides MSM_OK and negative errors. */
#define MSM_CONF_HELP    1 /**< --help or -h was given: print msm_conf_help() and exit 0 */
#define MSM_CONF_VERSION 2 /**< --version was given: print the version and exit 0 */

/** Where settings come from. */
typedef struct {
    int argc;
    char *const *argv;     /**< argv[0] is the program name and is skipped */
    char *const *envp;     /**< "NAME=value" strings, NULL-terminated; NULL = none */
    /** Optional: arguments that are not flags (and all after "--") are stored here, in
     *  order (pointers into argv; room for argc entries), and their count in
     *  *npositional. When NULL, such an argument is an error. */
    const char **positional;
    int *npositional;
} msm_conf_src_t;

/**
 * @brief Fills the fields of @p conf named by @p defs from defaults, the JSON file, the
 * environment and the flags, in that order of precedence.
 *
 * The file is the one given by --config FILE (or --config=FILE), else the one named by
 * the MSM_CONFIG variable, else none. Nested objects map to dotted names
 * ({"http":{"port":8081}} sets "http.port"). The variable of "redis.url" is
 * MSM_REDIS_URL (upper case, '.' and '-' become '_'). Flags: --http.port 8081,
 * --http.port=8081 and --http-port (any of '.', '-', '_' match each other).
 * @param conf the daemon's struct; only the fields named by @p defs are written
 * @param errbuf receives one line naming the source (file path, variable, flag) and key
 * @returns MSM_OK; MSM_CONF_HELP or MSM_CONF_VERSION; MSM_ERR_INVALID (unknown key or
 * flag, missing value, wrong type, out of range), MSM_ERR_PARSE (file is not JSON),
 * MSM_ERR_IO (file unreadable) or MSM_ERR_NOMEM.
 * @remark Unless MSM_OK is returned, every string field is freed and set to NULL, so
 * msm_conf_free() is then optional. On MSM_OK, free with msm_conf_free(). Neither the
 * table nor @p src is kept. Not thread-safe with respect to @p conf only.
 */
int msm_conf_load(const msm_conf_def_t *defs, size_t ndefs, void *conf,
                  const msm_conf_src_t *src, char *errbuf, size_t errbuf_size);

/** @brief msm_conf_load() with the process environment (environ) and no positional
 *  arguments allowed: what a daemon's main() calls. */
int msm_conf_load_argv(const msm_conf_def_t *defs, size_t ndefs, void *conf, int argc,
                       char *const *argv, char *errbuf, size_t errbuf_size);

/** @brief Frees the strings and property arrays msm_conf_load() put in @p conf and sets
 *  them to NULL. Safe to call twice. */
void msm_conf_free(const msm_conf_def_t *defs, size_t ndefs, void *conf);

/**
 * @brief Prints usage: "Usage: PROG [options]", @p summary, then one row per setting
 * (flag, environment variable, default, help with the allowed range or words).
 * @param summary one line about the program (may be NULL)
 */
void msm_conf_help(const msm_conf_def_t *defs, size_t ndefs, FILE *out, const char *progname,
                   const char *summary);

/**
 * @brief The settings as nested JSON ({"http":{"port":8080},...}) for /debug/info.
 * Secrets are "***" (null when unset), a password inside a URL
 * ("redis://:pass@host") becomes "***", and properties whose key mentions a password,
 * secret or token are masked.
 * @returns a new reference (caller json_decref()s it), or NULL when out of memory.
 */
struct json_t *msm_conf_to_json(const msm_conf_def_t *defs, size_t ndefs, const void *conf);

/**
 * @brief The environment variable of @p name: "MSM_" + upper case, '.' and '-' → '_'.
 * @returns the length it needs (like snprintf); @p buf is NUL-terminated when n > 0.
 */
size_t msm_conf_env_name(const char *name, char *buf, size_t n);

/**
 * @brief Copies @p s to @p buf with the password of every "scheme://user:password@"
 * replaced by "***" (for logging URLs). @returns @p buf (truncated to fit @p n).
 */
char *msm_conf_mask_url(const char *s, char *buf, size_t n);

#endif
