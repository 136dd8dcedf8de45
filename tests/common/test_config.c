/* SPDX-License-Identifier: MIT */
/* Table-driven configuration: the four layers and their precedence, every error naming
 * its source and key, flag forms, --help generation, masking for /debug/info. */
#include "msm_test.h"
#include "msm/config.h"
#include "msm/err.h"
#include "msm/log.h"
#include "msm/stream.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    msm_common_conf_t common;
    int workers;
    unsigned short small;
    int64_t big;
    bool verbose;
    int legacy; /* a boolean kept in an int */
    double ratio;
    char *token;
    char *label; /* default NULL */
    const char *mode;
    char *empty_default;
} t_conf_t;

static const char *const modes[] = {"fast", "safe", NULL};

static const msm_conf_def_t t_defs[] = {
    MSM_CONF_COMMON(t_conf_t, common, 8080),
    MSM_CONF_INT("workers", t_conf_t, workers, 4, 1, 64, "worker threads"),
    MSM_CONF_INT("limits.small", t_conf_t, small, 7, 0, 65535, "a small number"),
    MSM_CONF_INT("limits.big", t_conf_t, big, 1, INT64_MIN, INT64_MAX, "a big number"),
    MSM_CONF_BOOL("verbose", t_conf_t, verbose, false, "say more"),
    MSM_CONF_BOOL("legacy-mode", t_conf_t, legacy, true, "old behaviour"),
    MSM_CONF_DOUBLE("ratio", t_conf_t, ratio, 0.5, 0.0, 1.0, "a fraction"),
    MSM_CONF_SECRET_STR("auth.token", t_conf_t, token, NULL, "bearer token"),
    MSM_CONF_STR("label", t_conf_t, label, NULL, "free text"),
    MSM_CONF_ENUM("mode", t_conf_t, mode, "safe", modes, "how to run"),
    MSM_CONF_STR("empty", t_conf_t, empty_default, "", "empty by default"),
};
#define NDEFS MSM_CONF_COUNT(t_defs)

static char errbuf[512];

/* Loads with an argv given as a NULL-terminated list and an explicit environment. */
static int load(t_conf_t *c, char *const *envp, const char *const *args)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = "prog";
    for (; args && *args; args++)
        argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    memset(c, 0xa5, sizeof(*c)); /* garbage: load must not read what it did not write */
    msm_conf_src_t src = {.argc = argc, .argv = argv, .envp = envp};
    errbuf[0] = '\0';
    return msm_conf_load(t_defs, NDEFS, c, &src, errbuf, sizeof(errbuf));
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

static char tmpfiles[8][64];
static int ntmp;

static const char *write_file(const char *text)
{
    char *path = tmpfiles[ntmp++ % 8];
    snprintf(path, 64, "/tmp/msm_conf_XXXXXX.json");
    int fd = mkstemps(path, 5);
    CU_ASSERT_TRUE_FATAL(fd >= 0);
    size_t n = strlen(text);
    CU_ASSERT_EQUAL_FATAL(write(fd, text, n), (ssize_t)n);
    close(fd);
    return path;
}

static void remove_files(void)
{
    for (int i = 0; i < 8; i++) {
        if (tmpfiles[i][0])
            unlink(tmpfiles[i]);
        tmpfiles[i][0] = '\0';
    }
    ntmp = 0;
}

/* The error names what it must, and the conf holds no memory afterwards. */
static void expect_error(int rc, int want_rc, const t_conf_t *c, const char *must1,
                         const char *must2)
{
    CU_ASSERT_EQUAL(rc, want_rc);
    if (must1 && !strstr(errbuf, must1))
        fprintf(stderr, "\n  error \"%s\" lacks \"%s\"\n", errbuf, must1);
    if (must1)
        CU_ASSERT_PTR_NOT_NULL(strstr(errbuf, must1));
    if (must2 && !strstr(errbuf, must2))
        fprintf(stderr, "\n  error \"%s\" lacks \"%s\"\n", errbuf, must2);
    if (must2)
        CU_ASSERT_PTR_NOT_NULL(strstr(errbuf, must2));
    CU_ASSERT_PTR_NULL(c->common.redis_url);
    CU_ASSERT_PTR_NULL(c->common.ns);
    CU_ASSERT_PTR_NULL(c->common.kafka_props);
    CU_ASSERT_PTR_NULL(c->token);
}

static void test_defaults(void)
{
    t_conf_t c;
    CU_ASSERT_EQUAL_FATAL(load(&c, NULL, NULL), MSM_OK);
    CU_ASSERT_STRING_EQUAL(c.common.redis_url, "redis://127.0.0.1:6379");
    CU_ASSERT_STRING_EQUAL(c.common.ns, "msm");
    CU_ASSERT_EQUAL(c.common.log_backend, MSM_STREAM_REDIS);
    CU_ASSERT_STRING_EQUAL(c.common.kafka_brokers, "127.0.0.1:9092");
    CU_ASSERT_PTR_NULL(c.common.kafka_props);
    CU_ASSERT_STRING_EQUAL(c.common.http_bind, "0.0.0.0");
    CU_ASSERT_EQUAL(c.common.http_port, 8080);
    CU_ASSERT_EQUAL(c.common.logging_level, MSM_LOG_INFO);
    CU_ASSERT_EQUAL(c.common.logging_format, MSM_LOG_LOGFMT);
    CU_ASSERT_EQUAL(c.workers, 4);
    CU_ASSERT_EQUAL(c.small, 7);
    CU_ASSERT_EQUAL(c.big, 1);
    CU_ASSERT_FALSE(c.verbose);
    CU_ASSERT_EQUAL(c.legacy, 1);
    CU_ASSERT_DOUBLE_EQUAL(c.ratio, 0.5, 1e-12);
    CU_ASSERT_PTR_NULL(c.token);
    CU_ASSERT_PTR_NULL(c.label);
    CU_ASSERT_STRING_EQUAL(c.mode, "safe");
    CU_ASSERT_PTR_EQUAL(c.mode, modes[1]);
    CU_ASSERT_STRING_EQUAL(c.empty_default, "");
    msm_conf_free(t_defs, NDEFS, &c);
    CU_ASSERT_PTR_NULL(c.common.redis_url);
    msm_conf_free(t_defs, NDEFS, &c); /* twice is harmless */
}

static void test_env_names(void)
{
    char buf[64];
    msm_conf_env_name("redis.url", buf, sizeof(buf));
    CU_ASSERT_STRING_EQUAL(buf, "MSM_REDIS_URL");
    msm_conf_env_name("namespace", buf, sizeof(buf));
    CU_ASSERT_STRING_EQUAL(buf, "MSM_NAMESPACE");
    msm_conf_env_name("log.backend", buf, sizeof(buf));
    CU_ASSERT_STRING_EQUAL(buf, "MSM_LOG_BACKEND");
    msm_conf_env_name("kafka.brokers", buf, sizeof(buf));
    CU_ASSERT_STRING_EQUAL(buf, "MSM_KAFKA_BROKERS");
    CU_ASSERT_EQUAL(msm_conf_env_name("legacy-mode", buf, sizeof(buf)), 15);
    CU_ASSERT_STRING_EQUAL(buf, "MSM_LEGACY_MODE");
    CU_ASSERT_EQUAL(msm_conf_env_name("redis.url", buf, 6), 13);
    CU_ASSERT_STRING_EQUAL(buf, "MSM_R");
}

static void test_precedence_four_layers(void)
{
    const char *file = write_file("{\"http\":{\"port\":8001,\"bind\":\"127.0.0.1\"},"
                                  "\"namespace\":\"from-file\",\"workers\":5,"
                                  "\"redis\":{\"url\":\"redis://file:1\"},\"ratio\":0.25}");
    char *env[] = {"MSM_HTTP_PORT=8002", "MSM_NAMESPACE=from-env", "MSM_REDIS_URL=redis://env:2",
                   "UNRELATED=1", "MSM_UNKNOWN_THING=ignored", NULL};
    t_conf_t c;
    int rc = load(&c, env, ARGS("--config", file, "--http.port", "8003", "--redis.url=redis://flag:3"));
    CU_ASSERT_EQUAL_FATAL(rc, MSM_OK);
    CU_ASSERT_EQUAL(c.common.http_port, 8003);                        /* flag > env > file */
    CU_ASSERT_STRING_EQUAL(c.common.redis_url, "redis://flag:3");     /* flag > env > file */
    CU_ASSERT_STRING_EQUAL(c.common.ns, "from-env");                  /* env > file */
    CU_ASSERT_EQUAL(c.workers, 5);                                    /* file > default */
    CU_ASSERT_STRING_EQUAL(c.common.http_bind, "127.0.0.1");          /* file > default */
    CU_ASSERT_DOUBLE_EQUAL(c.ratio, 0.25, 1e-12);                     /* file > default */
    CU_ASSERT_STRING_EQUAL(c.common.kafka_brokers, "127.0.0.1:9092"); /* default */
    msm_conf_free(t_defs, NDEFS, &c);

    /* The same without the flags: the environment wins; without env: the file. */
    CU_ASSERT_EQUAL_FATAL(load(&c, env, ARGS("--config=", file)), MSM_ERR_INVALID);
    CU_ASSERT_EQUAL_FATAL(load(&c, env, ARGS("--config", file)), MSM_OK);
    CU_ASSERT_EQUAL(c.common.http_port, 8002);
    CU_ASSERT_STRING_EQUAL(c.common.redis_url, "redis://env:2");
    msm_conf_free(t_defs, NDEFS, &c);
    CU_ASSERT_EQUAL_FATAL(load(&c, NULL, ARGS("--config", file)), MSM_OK);
    CU_ASSERT_EQUAL(c.common.http_port, 8001);
    CU_ASSERT_STRING_EQUAL(c.common.ns, "from-file");
    msm_conf_free(t_defs, NDEFS, &c);

    /* A flag given twice: the last one wins. */
    CU_ASSERT_EQUAL_FATAL(load(&c, NULL, ARGS("--workers", "2", "--workers=3")), MSM_OK);
    CU_ASSERT_EQUAL(c.workers, 3);
    msm_conf_free(t_defs, NDEFS, &c);
    remove_files();
}

static void test_config_file_from_env(void)
{
    const char *a = write_file("{\"workers\":11}");
    const char *b = write_file("{\"workers\":12}");
    char var[128];
    snprintf(var, sizeof(var), "MSM_CONFIG=%s", a);
    char *env[] = {var, NULL};
    t_conf_t c;
    CU_ASSERT_EQUAL_FATAL(load(&c, env, NULL), MSM_OK);
    CU_ASSERT_EQUAL(c.workers, 11);
    msm_conf_free(t_defs, NDEFS, &c);
    CU_ASSERT_EQUAL_FATAL(load(&c, env, ARGS("--config", b)), MSM_OK); /* flag beats env */
    CU_ASSERT_EQUAL(c.workers, 12);
    msm_conf_free(t_defs, NDEFS, &c);
    remove_files();
}

static void test_nested_and_dotted_json(void)
{
    const char *file = write_file(
        "{\"logging\":{\"level\":\"debug\",\"format\":\"JSON\"},"
        "\"log.backend\":\"kafka\",\"limits\":{\"small\":65535,\"big\":-9223372036854775808},"
        "\"kafka\":{\"brokers\":\"k1:9092,k2:9092\"},\"verbose\":true,\"legacy-mode\":false,"
        "\"auth\":{\"token\":\"s3cret\"},\"mode\":\"fast\",\"http\":{}}");
    t_conf_t c;
    CU_ASSERT_EQUAL_FATAL(load(&c, NULL, ARGS("--config", file)), MSM_OK);
    CU_ASSERT_EQUAL(c.common.logging_level, MSM_LOG_DEBUG);
    CU_ASSERT_EQUAL(c.common.logging_format, MSM_LOG_JSON);
    CU_ASSERT_EQUAL(c.common.log_backend, MSM_STREAM_KAFKA);
    CU_ASSERT_EQUAL(c.small, 65535);
    CU_ASSERT_EQUAL(c.big, INT64_MIN);
    CU_ASSERT_STRING_EQUAL(c.common.kafka_brokers, "k1:9092,k2:9092");
    CU_ASSERT_TRUE(c.verbose);
    CU_ASSERT_EQUAL(c.legacy, 0);
    CU_ASSERT_STRING_EQUAL(c.token, "s3cret");
    CU_ASSERT_PTR_EQUAL(c.mode, modes[0]);
    msm_conf_free(t_defs, NDEFS, &c);
    remove_files();
}

static void test_file_errors(void)
{
    t_conf_t c;
    const char *f;

    f = write_file("{\"http\":{\"prot\":8081}}");
    expect_error(load(&c, NULL, ARGS("--config", f)), MSM_ERR_INVALID, &c, f,
                 "unknown key \"http.prot\"");
    f = write_file("{\"nope\":{\"x\":1}}");
    expect_error(load(&c, NULL, ARGS("--config", f)), MSM_ERR_INVALID, &c, f,
                 "unknown key \"nope\"");
    f = write_file("{\"http\":{\"port\":\"8081\"}}");
    expect_error(load(&c, NULL, ARGS("--config", f)), MSM_ERR_INVALID, &c, "\"http.port\"",
                 "expected an integer, got a string");
    f = write_file("{\"workers\":1.5}");
    expect_error(load(&c, NULL, ARGS("--config", f)), MSM_ERR_INVALID, &c, "\"workers\"",
                 "expected an integer");
    f = write_file("{\"verbose\":1}");
    expect_error(load(&c, NULL, ARGS("--config", f)), MSM_ERR_INVALID, &c, "\"verbose\"",
                 "expected true or false");
    f = write_file("{\"namespace\":5}");
    expect_error(load(&c, NULL, ARGS("--config", f)), MSM_ERR_INVALID, &c, "\"namespace\"",
                 "expected a string");
    f = write_file("{\"ratio\":\"half\"}");
    expect_error(load(&c, NULL, ARGS("--config", f)), MSM_ERR_INVALID, &c, "\"ratio\"",
                 "expected a number");
    f = write_file("{\"http\":5}");
    expect_error(load(&c, NULL, ARGS("--config", f)), MSM_ERR_INVALID, &c, "\"http\"",
                 "expected an object");
    f = write_file("{\"http\":{\"port\":{\"x\":1}}}");
    expect_error(load(&c, NULL, ARGS("--config", f)), MSM_ERR_INVALID, &c, "\"http.port\"",
                 "got an object");
    f = write_file("{\"http\":{\"port\":70000}}");
    expect_error(load(&c, NULL, ARGS("--config", f)), MSM_ERR_INVALID, &c, f,
                 "\"http.port\": 70000 is out of range [0, 65535]");
    f = write_file("{\"ratio\":1.5}");
    expect_error(load(&c, NULL, ARGS("--config", f)), MSM_ERR_INVALID, &c, "\"ratio\"",
                 "out of range");
    f = write_file("{\"log\":{\"backend\":\"nats\"}}");
    expect_error(load(&c, NULL, ARGS("--config", f)), MSM_ERR_INVALID, &c, "\"log.backend\"",
                 "\"nats\" is not one of: redis, kafka");
    f = write_file("{\"workers\":2,\n \"workers\":3}");
    expect_error(load(&c, NULL, ARGS("--config", f)), MSM_ERR_PARSE, &c, f, "line 2");
    f = write_file("{\"workers\": ");
    expect_error(load(&c, NULL, ARGS("--config", f)), MSM_ERR_PARSE, &c, f, "line");
    f = write_file("[1,2]");
    expect_error(load(&c, NULL, ARGS("--config", f)), MSM_ERR_INVALID, &c, f, "JSON object");
    f = write_file("{\"kafka\":{\"props\":{\"linger.ms\":[1]}}}");
    expect_error(load(&c, NULL, ARGS("--config", f)), MSM_ERR_INVALID, &c, "\"kafka.props\"",
                 "linger.ms");
    expect_error(load(&c, NULL, ARGS("--config", "/nonexistent/msm.json")), MSM_ERR_IO, &c,
                 "config file /nonexistent/msm.json", "No such file");
    remove_files();
}

static void test_env_errors(void)
{
    t_conf_t c;
    char *e1[] = {"MSM_HTTP_PORT=abc", NULL};
    expect_error(load(&c, e1, NULL), MSM_ERR_INVALID, &c, "environment MSM_HTTP_PORT",
                 "\"http.port\": \"abc\" is not an integer");
    char *e2[] = {"MSM_HTTP_PORT=-1", NULL};
    expect_error(load(&c, e2, NULL), MSM_ERR_INVALID, &c, "MSM_HTTP_PORT", "out of range");
    char *e3[] = {"MSM_HTTP_PORT=8080x", NULL};
    expect_error(load(&c, e3, NULL), MSM_ERR_INVALID, &c, "MSM_HTTP_PORT", "not an integer");
    char *e4[] = {"MSM_HTTP_PORT=", NULL};
    expect_error(load(&c, e4, NULL), MSM_ERR_INVALID, &c, "MSM_HTTP_PORT", "not an integer");
    char *e5[] = {"MSM_VERBOSE=maybe", NULL};
    expect_error(load(&c, e5, NULL), MSM_ERR_INVALID, &c, "MSM_VERBOSE", "not a boolean");
    char *e6[] = {"MSM_RATIO=nan", NULL};
    expect_error(load(&c, e6, NULL), MSM_ERR_INVALID, &c, "MSM_RATIO", "\"ratio\"");
    char *e7[] = {"MSM_LOG_BACKEND=nats", NULL};
    expect_error(load(&c, e7, NULL), MSM_ERR_INVALID, &c, "MSM_LOG_BACKEND", "not one of");
    char *e8[] = {"MSM_LIMITS_BIG=99999999999999999999", NULL};
    expect_error(load(&c, e8, NULL), MSM_ERR_INVALID, &c, "MSM_LIMITS_BIG", "out of range");
    char *e9[] = {"MSM_KAFKA_PROPS=linger.ms", NULL};
    expect_error(load(&c, e9, NULL), MSM_ERR_INVALID, &c, "MSM_KAFKA_PROPS", "key=value");

    /* Valid forms. */
    char *ok[] = {"MSM_VERBOSE=yes", "MSM_LEGACY_MODE=0", "MSM_RATIO=1e-1",
                  "MSM_LOG_BACKEND=kafka", "MSM_KAFKA_BROKERS=b:1", "MSM_LIMITS_SMALL=0",
                  "MSM_LIMITS_BIG=-5", "MSM_LABEL=", NULL};
    CU_ASSERT_EQUAL_FATAL(load(&c, ok, NULL), MSM_OK);
    CU_ASSERT_TRUE(c.verbose);
    CU_ASSERT_EQUAL(c.legacy, 0);
    CU_ASSERT_DOUBLE_EQUAL(c.ratio, 0.1, 1e-12);
    CU_ASSERT_EQUAL(c.common.log_backend, MSM_STREAM_KAFKA);
    CU_ASSERT_STRING_EQUAL(c.common.kafka_brokers, "b:1");
    CU_ASSERT_EQUAL(c.small, 0);
    CU_ASSERT_EQUAL(c.big, -5);
    CU_ASSERT_PTR_NOT_NULL(c.label);
    CU_ASSERT_STRING_EQUAL(c.label, "");
    msm_conf_free(t_defs, NDEFS, &c);
}

static void test_flag_forms(void)
{
    t_conf_t c;
    const char *const *forms[] = {
        ARGS("--http.port", "8081"), ARGS("--http.port=8081"), ARGS("--http-port", "8081"),
        ARGS("--http-port=8081"),    ARGS("--http_port=8081"),
    };
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        CU_ASSERT_EQUAL_FATAL(load(&c, NULL, forms[i]), MSM_OK);
        CU_ASSERT_EQUAL(c.common.http_port, 8081);
        msm_conf_free(t_defs, NDEFS, &c);
    }
    CU_ASSERT_EQUAL_FATAL(load(&c, NULL, ARGS("--log-backend", "KAFKA", "--logging.level=warn",
                                              "--legacy.mode=false", "--limits.big", "-42",
                                              "--label=a=b", "--namespace", "")),
                          MSM_OK);
    CU_ASSERT_EQUAL(c.common.log_backend, MSM_STREAM_KAFKA);
    CU_ASSERT_EQUAL(c.common.logging_level, MSM_LOG_WARN);
    CU_ASSERT_EQUAL(c.legacy, 0);
    CU_ASSERT_EQUAL(c.big, -42); /* a value may start with a single '-' */
    CU_ASSERT_STRING_EQUAL(c.label, "a=b");
    CU_ASSERT_STRING_EQUAL(c.common.ns, "");
    msm_conf_free(t_defs, NDEFS, &c);
}

static void test_bool_forms(void)
{
    t_conf_t c;
    struct {
        const char *const *args;
        int want;
    } cases[] = {
        {ARGS("--verbose"), 1},
        {ARGS("--verbose=true"), 1},
        {ARGS("--verbose=false"), 0},
        {ARGS("--verbose=1"), 1},
        {ARGS("--verbose=off"), 0},
        {ARGS("--verbose", "--no-verbose"), 0},
        {ARGS("--no-verbose", "--verbose"), 1},
        {ARGS("--no-verbose"), 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        CU_ASSERT_EQUAL_FATAL(load(&c, NULL, cases[i].args), MSM_OK);
        CU_ASSERT_EQUAL(c.verbose, cases[i].want);
        msm_conf_free(t_defs, NDEFS, &c);
    }
    /* An int-backed boolean: --no-legacy-mode, and the environment under a flag. */
    char *env[] = {"MSM_VERBOSE=true", NULL};
    CU_ASSERT_EQUAL_FATAL(load(&c, env, ARGS("--no-legacy-mode", "--no-verbose")), MSM_OK);
    CU_ASSERT_EQUAL(c.legacy, 0);
    CU_ASSERT_FALSE(c.verbose);
    msm_conf_free(t_defs, NDEFS, &c);

    expect_error(load(&c, NULL, ARGS("--verbose=maybe")), MSM_ERR_INVALID, &c, "flag --verbose",
                 "not a boolean");
    expect_error(load(&c, NULL, ARGS("--no-verbose=true")), MSM_ERR_INVALID, &c, "verbose",
                 "takes no value");
    /* A boolean flag never takes the next argument as its value. */
    expect_error(load(&c, NULL, ARGS("--verbose", "false")), MSM_ERR_INVALID, &c,
                 "unexpected argument \"false\"", NULL);
    /* --no- only negates booleans. */
    expect_error(load(&c, NULL, ARGS("--no-workers")), MSM_ERR_INVALID, &c,
                 "flag --no-workers", "unknown flag");
}

static void test_flag_errors(void)
{
    t_conf_t c;
    expect_error(load(&c, NULL, ARGS("--bogus", "1")), MSM_ERR_INVALID, &c, "flag --bogus",
                 "unknown flag");
    expect_error(load(&c, NULL, ARGS("--bogus=1")), MSM_ERR_INVALID, &c, "flag --bogus:",
                 "unknown flag");
    expect_error(load(&c, NULL, ARGS("-p", "1")), MSM_ERR_INVALID, &c, "flag -p", NULL);
    expect_error(load(&c, NULL, ARGS("--http.port")), MSM_ERR_INVALID, &c, "\"http.port\"",
                 "needs a value");
    expect_error(load(&c, NULL, ARGS("--http.port", "--namespace", "x")), MSM_ERR_INVALID, &c,
                 "flag --http.port", "needs a value");
    expect_error(load(&c, NULL, ARGS("--config")), MSM_ERR_INVALID, &c, "flag --config",
                 "needs a value");
    expect_error(load(&c, NULL, ARGS("--http.port=65536")), MSM_ERR_INVALID, &c,
                 "flag --http.port", "\"http.port\": 65536 is out of range [0, 65535]");
    expect_error(load(&c, NULL, ARGS("--http.port", "80a")), MSM_ERR_INVALID, &c,
                 "flag --http.port", "\"80a\" is not an integer");
    expect_error(load(&c, NULL, ARGS("--workers", "0")), MSM_ERR_INVALID, &c, "\"workers\"",
                 "out of range [1, 64]");
    expect_error(load(&c, NULL, ARGS("--ratio=-0.1")), MSM_ERR_INVALID, &c, "\"ratio\"",
                 "out of range");
    expect_error(load(&c, NULL, ARGS("--ratio=abc")), MSM_ERR_INVALID, &c, "\"ratio\"",
                 "not a finite number");
    expect_error(load(&c, NULL, ARGS("--mode", "slow")), MSM_ERR_INVALID, &c, "\"mode\"",
                 "not one of: fast, safe");
    expect_error(load(&c, NULL, ARGS("stray")), MSM_ERR_INVALID, &c,
                 "unexpected argument \"stray\"", NULL);
    /* A flag error is reported even when the file and environment are fine. */
    const char *f = write_file("{\"workers\":9}");
    char *env[] = {"MSM_WORKERS=10", NULL};
    expect_error(load(&c, env, ARGS("--config", f, "--workers=65")), MSM_ERR_INVALID, &c,
                 "flag --workers", "65 is out of range");
    remove_files();
}

static void test_help_and_version(void)
{
    t_conf_t c;
    CU_ASSERT_EQUAL(load(&c, NULL, ARGS("--help")), MSM_CONF_HELP);
    CU_ASSERT_PTR_NULL(c.common.redis_url);
    CU_ASSERT_EQUAL(load(&c, NULL, ARGS("-h")), MSM_CONF_HELP);
    CU_ASSERT_EQUAL(load(&c, NULL, ARGS("--bogus", "--help")), MSM_CONF_HELP);
    CU_ASSERT_EQUAL(load(&c, NULL, ARGS("--version")), MSM_CONF_VERSION);
    CU_ASSERT_EQUAL(load(&c, NULL, ARGS("--version", "--help")), MSM_CONF_HELP);
    CU_ASSERT_PTR_NULL(c.common.ns);
    char *bad_env[] = {"MSM_HTTP_PORT=zzz", NULL};
    CU_ASSERT_EQUAL(load(&c, bad_env, ARGS("--version")), MSM_CONF_VERSION);
    /* After "--" nothing is a flag. */
    const char *pos[8];
    int npos = -1;
    char *argv[] = {"prog", "--workers", "3", "a", "--", "--help", "-x", NULL};
    msm_conf_src_t src = {.argc = 7, .argv = argv, .positional = pos, .npositional = &npos};
    CU_ASSERT_EQUAL_FATAL(msm_conf_load(t_defs, NDEFS, &c, &src, errbuf, sizeof(errbuf)), MSM_OK);
    CU_ASSERT_EQUAL(c.workers, 3);
    CU_ASSERT_EQUAL_FATAL(npos, 3);
    CU_ASSERT_STRING_EQUAL(pos[0], "a");
    CU_ASSERT_STRING_EQUAL(pos[1], "--help");
    CU_ASSERT_STRING_EQUAL(pos[2], "-x");
    msm_conf_free(t_defs, NDEFS, &c);
}

static void test_help_text(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    msm_conf_help(t_defs, NDEFS, f, "msm-test", "A test daemon.");
    fclose(f);
    static const char *const want[] = {
        "Usage: msm-test [options]", "A test daemon.", "--config FILE", "MSM_CONFIG",
        "--http.port INT", "MSM_HTTP_PORT", "8080", "HTTP listen port (0: any free port) (0..65535)",
        "--redis.url STR", "MSM_REDIS_URL", "redis://127.0.0.1:6379", "MSM_NAMESPACE",
        "--log.backend redis|kafka", "MSM_LOG_BACKEND", "MSM_KAFKA_BROKERS",
        "--logging.level debug|info|warn|error", "--[no-]verbose", "MSM_VERBOSE", "false",
        "--[no-]legacy-mode", "MSM_LEGACY_MODE", "--ratio NUM", "(0..1)", "worker threads (1..64)",
        "--kafka.props K=V", "--auth.token STR", "MSM_AUTH_TOKEN", "--help", "--version",
        "--mode fast|safe",
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        if (!strstr(text, want[i]))
            fprintf(stderr, "\n  help lacks \"%s\"\n", want[i]);
        CU_ASSERT_PTR_NOT_NULL(strstr(text, want[i]));
    }
    /* One line per setting, and the line of http.port carries all four columns. */
    const char *line = strstr(text, "--http.port INT");
    CU_ASSERT_PTR_NOT_NULL_FATAL(line);
    const char *eol = strchr(line, '\n');
    char row[512];
    snprintf(row, sizeof(row), "%.*s", (int)(eol - line), line);
    CU_ASSERT_PTR_NOT_NULL(strstr(row, "MSM_HTTP_PORT"));
    CU_ASSERT_PTR_NOT_NULL(strstr(row, "8080"));
    CU_ASSERT_PTR_NOT_NULL(strstr(row, "HTTP listen port"));
    int lines = 0;
    for (const char *p = text; *p; p++)
        lines += *p == '\n';
    CU_ASSERT_TRUE(lines >= (int)NDEFS + 4);
    free(text);
}

static void test_props(void)
{
    const char *file = write_file(
        "{\"kafka\":{\"props\":{\"linger.ms\":5,\"acks\":\"all\",\"enable.idempotence\":true,"
        "\"x.ratio\":0.5,\"sasl.password\":\"pw\"}}}");
    char *env[] = {"MSM_KAFKA_PROPS=linger.ms=7,compression.type=lz4", NULL};
    t_conf_t c;
    CU_ASSERT_EQUAL_FATAL(load(&c, env, ARGS("--config", file, "--kafka.props", "acks=1",
                                             "--kafka.props.batch.size=100",
                                             "--kafka-props=client.id=x")),
                          MSM_OK);
    const char *want[] = {"linger.ms=7",    "acks=1",           "enable.idempotence=true",
                          "x.ratio=0.5",    "sasl.password=pw", "compression.type=lz4",
                          "batch.size=100", "client.id=x"};
    int n = 0;
    for (char **p = c.common.kafka_props; p && *p; p++)
        n++;
    CU_ASSERT_EQUAL(n, 8);
    for (size_t i = 0; i < 8; i++) {
        int found = 0;
        for (char **p = c.common.kafka_props; p && *p; p++)
            found |= strcmp(*p, want[i]) == 0;
        if (!found)
            fprintf(stderr, "\n  missing property %s\n", want[i]);
        CU_ASSERT_TRUE(found);
    }
    json_t *j = msm_conf_to_json(t_defs, NDEFS, &c);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    json_t *props = json_object_get(json_object_get(j, "kafka"), "props");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(props, "linger.ms")), "7");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(props, "sasl.password")), "***");
    json_decref(j);
    msm_conf_free(t_defs, NDEFS, &c);
    CU_ASSERT_PTR_NULL(c.common.kafka_props);
    remove_files();
}

static void test_to_json_masks(void)
{
    char *env[] = {"MSM_REDIS_URL=redis://:hunter2@db.internal:6379/0", "MSM_AUTH_TOKEN=tok-123",
                   "MSM_LOG_BACKEND=kafka", NULL};
    t_conf_t c;
    CU_ASSERT_EQUAL_FATAL(load(&c, env, ARGS("--label", "http://user:pw@h/x,redis://h2")), MSM_OK);
    json_t *j = msm_conf_to_json(t_defs, NDEFS, &c);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    char *dump = json_dumps(j, JSON_SORT_KEYS);
    CU_ASSERT_PTR_NOT_NULL_FATAL(dump);
    CU_ASSERT_PTR_NULL(strstr(dump, "hunter2"));
    CU_ASSERT_PTR_NULL(strstr(dump, "tok-123"));
    CU_ASSERT_PTR_NULL(strstr(dump, "pw@"));
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_object_get(j, "redis"), "url")),
                           "redis://:***@db.internal:6379/0");
    CU_ASSERT_STRING_EQUAL(
        json_string_value(json_object_get(json_object_get(j, "auth"), "token")), "***");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "label")),
                           "http://user:***@h/x,redis://h2");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_object_get(j, "http"), "port")), 8080);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_object_get(j, "log"), "backend")),
                           "kafka");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "namespace")), "msm");
    CU_ASSERT_TRUE(json_is_false(json_object_get(j, "verbose")));
    CU_ASSERT_TRUE(json_is_true(json_object_get(j, "legacy-mode")));
    CU_ASSERT_DOUBLE_EQUAL(json_real_value(json_object_get(j, "ratio")), 0.5, 1e-12);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "mode")), "safe");
    CU_ASSERT_EQUAL(
        json_integer_value(json_object_get(json_object_get(j, "limits"), "small")), 7);
    CU_ASSERT_TRUE(json_is_object(json_object_get(json_object_get(j, "kafka"), "props")));
    free(dump);
    json_decref(j);
    msm_conf_free(t_defs, NDEFS, &c);

    /* An unset secret is null, not "***". */
    CU_ASSERT_EQUAL_FATAL(load(&c, NULL, NULL), MSM_OK);
    j = msm_conf_to_json(t_defs, NDEFS, &c);
    CU_ASSERT_TRUE(json_is_null(json_object_get(json_object_get(j, "auth"), "token")));
    json_decref(j);
    msm_conf_free(t_defs, NDEFS, &c);

    /* The JSON is a valid config file that loads back to the same values. */
    char *env2[] = {"MSM_WORKERS=17", "MSM_KAFKA_PROPS=a.b=1", NULL};
    CU_ASSERT_EQUAL_FATAL(load(&c, env2, NULL), MSM_OK);
    j = msm_conf_to_json(t_defs, NDEFS, &c);
    json_object_del(j, "label");
    char *text = json_dumps(j, 0);
    json_decref(j);
    msm_conf_free(t_defs, NDEFS, &c);
    const char *f = write_file(text);
    free(text);
    CU_ASSERT_EQUAL_FATAL(load(&c, NULL, ARGS("--config", f)), MSM_OK);
    CU_ASSERT_EQUAL(c.workers, 17);
    CU_ASSERT_STRING_EQUAL(c.common.kafka_props[0], "a.b=1");
    msm_conf_free(t_defs, NDEFS, &c);
    remove_files();
}

static void test_mask_url(void)
{
    char buf[128];
    CU_ASSERT_STRING_EQUAL(msm_conf_mask_url("redis://:pass@host:6379", buf, sizeof(buf)),
                           "redis://:***@host:6379");
    CU_ASSERT_STRING_EQUAL(msm_conf_mask_url("redis://user:pass@host", buf, sizeof(buf)),
                           "redis://user:***@host");
    CU_ASSERT_STRING_EQUAL(msm_conf_mask_url("redis://host:6379/0", buf, sizeof(buf)),
                           "redis://host:6379/0");
    CU_ASSERT_STRING_EQUAL(msm_conf_mask_url("redis://user@host", buf, sizeof(buf)),
                           "redis://user@host");
    CU_ASSERT_STRING_EQUAL(msm_conf_mask_url("redis://:p/ss@host", buf, sizeof(buf)),
                           "redis://:***@host");
    CU_ASSERT_STRING_EQUAL(msm_conf_mask_url("plain text", buf, sizeof(buf)), "plain text");
    CU_ASSERT_STRING_EQUAL(msm_conf_mask_url("a://u:1@h,b://v:2@k", buf, sizeof(buf)),
                           "a://u:***@h,b://v:***@k");
    CU_ASSERT_STRING_EQUAL(msm_conf_mask_url("redis://:pass@host", buf, 12), "redis://:**");
}

typedef struct {
    int a;
    int b;
} bad_t;

static void test_bad_tables(void)
{
    bad_t b;
    char *argv[] = {"prog", NULL};
    msm_conf_src_t src = {.argc = 1, .argv = argv};
    const msm_conf_def_t dup[] = {
        MSM_CONF_INT("x.y", bad_t, a, 1, 0, 10, ""),
        MSM_CONF_INT("x-y", bad_t, b, 1, 0, 10, ""),
    };
    CU_ASSERT_EQUAL(msm_conf_load(dup, 2, &b, &src, errbuf, sizeof(errbuf)), MSM_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(errbuf, "config table"));
    const msm_conf_def_t range[] = {MSM_CONF_INT("x", bad_t, a, 11, 0, 10, "")};
    CU_ASSERT_EQUAL(msm_conf_load(range, 1, &b, &src, errbuf, sizeof(errbuf)), MSM_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(errbuf, "\"x\""));
    const msm_conf_def_t wide[] = {MSM_CONF_INT("x", bad_t, a, 0, 0, INT64_MAX, "")};
    CU_ASSERT_EQUAL(msm_conf_load(wide, 1, &b, &src, errbuf, sizeof(errbuf)), MSM_ERR_INVALID);
    const msm_conf_def_t prefix[] = {
        MSM_CONF_INT("x", bad_t, a, 1, 0, 10, ""),
        MSM_CONF_INT("x.y", bad_t, b, 1, 0, 10, ""),
    };
    CU_ASSERT_EQUAL(msm_conf_load(prefix, 2, &b, &src, errbuf, sizeof(errbuf)), MSM_ERR_INVALID);
    const msm_conf_def_t upper[] = {MSM_CONF_INT("Http.Port", bad_t, a, 1, 0, 10, "")};
    CU_ASSERT_EQUAL(msm_conf_load(upper, 1, &b, &src, errbuf, sizeof(errbuf)), MSM_ERR_INVALID);
    static const char *const none[] = {"a", NULL};
    const msm_conf_def_t en[] = {MSM_CONF_ENUM("e", bad_t, a, "b", none, "")};
    CU_ASSERT_EQUAL(msm_conf_load(en, 1, &b, &src, errbuf, sizeof(errbuf)), MSM_ERR_INVALID);
    const msm_conf_def_t good[] = {
        MSM_CONF_INT("x.y", bad_t, a, 1, 0, 10, ""),
        MSM_CONF_ENUM("e", bad_t, b, "a", none, ""),
    };
    CU_ASSERT_EQUAL(msm_conf_load(good, 2, &b, &src, errbuf, sizeof(errbuf)), MSM_OK);
    CU_ASSERT_EQUAL(b.a, 1);
    CU_ASSERT_EQUAL(b.b, 0);
}

static void test_load_argv_uses_environ(void)
{
    t_conf_t c;
    char *argv[] = {"prog", "--workers", "6", NULL};
    setenv("MSM_NAMESPACE", "from-environ", 1);
    setenv("MSM_WORKERS", "2", 1);
    int rc = msm_conf_load_argv(t_defs, NDEFS, &c, 3, argv, errbuf, sizeof(errbuf));
    unsetenv("MSM_NAMESPACE");
    unsetenv("MSM_WORKERS");
    CU_ASSERT_EQUAL_FATAL(rc, MSM_OK);
    CU_ASSERT_STRING_EQUAL(c.common.ns, "from-environ");
    CU_ASSERT_EQUAL(c.workers, 6);
    msm_conf_free(t_defs, NDEFS, &c);
}

static CU_TestInfo tests[] = {
    {"defaults", test_defaults},
    {"environment names", test_env_names},
    {"precedence: default < file < env < flag", test_precedence_four_layers},
    {"MSM_CONFIG names the file", test_config_file_from_env},
    {"nested and dotted JSON", test_nested_and_dotted_json},
    {"file errors name file and key", test_file_errors},
    {"environment errors name the variable", test_env_errors},
    {"flag forms", test_flag_forms},
    {"bool forms", test_bool_forms},
    {"flag errors", test_flag_errors},
    {"--help and --version", test_help_and_version},
    {"help text from the table", test_help_text},
    {"pass-through properties", test_props},
    {"to_json masks secrets", test_to_json_masks},
    {"mask URL passwords", test_mask_url},
    {"bad tables are refused", test_bad_tables},
    {"load_argv reads environ", test_load_argv_uses_environ},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"config", NULL, NULL, NULL, NULL, tests},
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return msm_test_run(suites);
}
