/* SPDX-License-Identifier: MIT */
/* CloudEvents fidelity with a client we did not write: the npm CloudEvents SDK (pinned in
 * package.json here, installed into a temporary folder at test time) publishes a CloudEvent
 * in binary mode to the real msm-frontend (producer.js), and a lambda written with the same
 * SDK (receiver.js) parses what the real router pushes, once as a single binary-mode push
 * and once as a structured batch. The producer's source, subject, type, dataschema and
 * extension come back, its id as msmsourceid, while the id is msm's.
 *
 *   test_cloudevents_sdk FRONTEND SCHEDULER FLOWCONTROL ROUTER CLIENT_DIR
 *
 * Without node or npm on PATH it is skipped (exit 77) with a message saying so. */
#include "msm_test.h"
#include "msm_test_daemons.h"

#include <curl/curl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SKIPPED          77
#define NPM_TIMEOUT_MS   (300 * 1000) /* the npm registry is on the internet */
#define NODE_TIMEOUT_MS  (60 * 1000)
#define READY_TIMEOUT_MS 15000
#define PUSH_TIMEOUT_S   30
#define TOPIC            "shop-orders"

enum { FRONTEND, SCHEDULER, FLOWCONTROL, ROUTER, NDAEMONS };
#define daemon_names msm_test_daemon_names
static const char *bins[NDAEMONS];
static const char *client_dir;

static msm_test_redis_t redis_srv;
static char ns[64];
static char work_dir[256];
static char frontend_url[64];
static msm_test_proc_t daemons[NDAEMONS];
static msm_test_proc_t receiver;
static int installed;

/* ---- small helpers ---- */

static int on_path(const char *name)
{
    const char *path = getenv("PATH");
    while (path && *path) {
        size_t n = strcspn(path, ":");
        char file[1200];
        snprintf(file, sizeof(file), "%.*s/%s", (int)n, n ? path : ".", name);
        if (access(file, X_OK) == 0)
            return 1;
        path += n;
        if (*path == ':')
            path++;
    }
    return 0;
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *text = NULL;
    size_t len = 0, cap = 0, n;
    char buf[4096];
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
        if (len + n + 1 > cap) {
            cap = (len + n + 1) * 2;
            char *t = realloc(text, cap);
            if (!t)
                break;
            text = t;
        }
        memcpy(text + len, buf, n);
        len += n;
    }
    fclose(f);
    if (text)
        text[len] = '\0';
    return text;
}

static void print_file(const char *title, const char *path)
{
    char *text = read_file(path);
    printf("\n  --- %s ---\n%s\n", title, text ? text : "(cannot be read)");
    free(text);
    fflush(stdout);
}

static int copy_file(const char *from, const char *to)
{
    char *text = read_file(from);
    FILE *out = text ? fopen(to, "wb") : NULL;
    int rc = out && fputs(text, out) >= 0 ? 0 : -1;
    if (out && fclose(out) != 0)
        rc = -1;
    free(text);
    return rc;
}

/* One request to the frontend; @returns the HTTP status (0: no answer). */
static long api(const char *method, const char *path, const char *body)
{
    char url[512];
    snprintf(url, sizeof(url), "%s%s", frontend_url, path);
    return msm_test_http_json(method, url, body, NULL);
}

/* Node and npm children: never outlive the test, their own children included. */
static void proc_init(msm_test_proc_t *p, const char *log_name)
{
    memset(p, 0, sizeof(*p));
    snprintf(p->log, sizeof(p->log), "%s/%s", work_dir, log_name);
    p->death_signal = SIGKILL;
    p->own_group = 1;
}

/* Runs a command to its end: @returns its exit status, or -1 when killed after the timeout. */
static int run(const char *const argv[], const char *log_name, int timeout_ms)
{
    msm_test_proc_t p;
    proc_init(&p, log_name);
    for (int i = 0; argv[i]; i++)
        msm_test_proc_arg(&p, "%s", argv[i]);
    if (msm_test_proc_start(&p) != 0)
        return -1;
    return msm_test_proc_stop(&p, 0, timeout_ms);
}

/* ---- the suite: redis, the four daemons, the receiver ---- */

static int suite_init(void)
{
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const char *tmp = getenv("TMPDIR");
    snprintf(work_dir, sizeof(work_dir), "%s/msm-cesdk-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(work_dir) || msm_test_redis_start(&redis_srv) != 0)
        return -1;
    msm_test_namespace(ns, sizeof(ns));
    for (int i = 0; i < NDAEMONS; i++)
        msm_test_daemon_setup(&daemons[i], i, bins[i], work_dir, redis_srv.url, ns);
    if (msm_test_daemons_start(daemons, NDAEMONS, READY_TIMEOUT_MS) != 0) {
        for (int i = 0; i < NDAEMONS; i++)
            print_file(daemon_names[i], daemons[i].log);
        return -1;
    }
    snprintf(frontend_url, sizeof(frontend_url), "http://127.0.0.1:%d", daemons[FRONTEND].port);
    return 0;
}

static int suite_clean(void)
{
    int rc = 0;
    if (receiver.pid > 0)
        msm_test_proc_stop(&receiver, SIGTERM, MSM_TEST_PROC_GRACE_MS);
    for (int i = 0; i < NDAEMONS; i++) {
        if (daemons[i].pid > 0 &&
            msm_test_proc_stop(&daemons[i], SIGTERM, MSM_TEST_PROC_GRACE_MS) != 0) {
            fprintf(stderr, "%s did not exit cleanly on SIGTERM\n", daemon_names[i]);
            print_file(daemon_names[i], daemons[i].log);
            rc = -1;
        }
    }
    msm_test_redis_destroy(&redis_srv);
    if (work_dir[0]) {
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", work_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", work_dir);
    }
    curl_global_cleanup();
    return rc;
}

/* ---- the tests ---- */

/* The pinned SDK from package.json, into the temporary folder (never the source tree). */
static void test_npm_install(void)
{
    const char *files[] = {"package.json", "producer.js", "receiver.js"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char from[600], to[600];
        snprintf(from, sizeof(from), "%s/%s", client_dir, files[i]);
        snprintf(to, sizeof(to), "%s/%s", work_dir, files[i]);
        CU_ASSERT_EQUAL_FATAL(copy_file(from, to), 0);
    }
    const char *argv[] = {"npm",      "install", "--no-audit", "--no-fund", "--no-update-notifier",
                          "--prefix", work_dir,  NULL};
    int rc = run(argv, "npm.log", NPM_TIMEOUT_MS);
    if (rc != 0) {
        printf("\n  npm install failed (exit %d): is the npm registry reachable?\n", rc);
        char log[320];
        snprintf(log, sizeof(log), "%s/npm.log", work_dir);
        print_file("npm output", log);
    }
    CU_ASSERT_EQUAL(rc, 0);
    installed = rc == 0;
}

/* The receiver's line for @p mode ("binary" or "batch"), or NULL. */
static json_t *received(const char *mode)
{
    char *text = read_file(receiver.log);
    json_t *found = NULL;
    for (char *save = NULL, *l = text ? strtok_r(text, "\n", &save) : NULL; l && !found;
         l = strtok_r(NULL, "\n", &save)) {
        json_t *o = l[0] == '{' ? json_loads(l, 0, NULL) : NULL;
        const char *m = json_string_value(json_object_get(o, "mode"));
        if (m && strcmp(m, mode) == 0)
            found = o;
        else
            json_decref(o);
    }
    free(text);
    return found;
}

static const char *jstr(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "(absent)";
}

static void check_event(const char *mode, const char *path, const char *msm_id,
                        const char *source_id)
{
    json_t *o = NULL;
    for (int i = 0; i < PUSH_TIMEOUT_S * 10 && !(o = received(mode)); i++)
        usleep(100 * 1000);
    if (!o) {
        print_file("receiver.js", receiver.log);
        print_file("router log", daemons[ROUTER].log);
    }
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_STRING_EQUAL(jstr(o, "path"), path);
    CU_ASSERT_STRING_EQUAL(jstr(o, "id"), msm_id);
    CU_ASSERT_STRING_EQUAL(jstr(o, "source"), "/shop");
    CU_ASSERT_STRING_EQUAL(jstr(o, "subject"), "o-1");
    CU_ASSERT_STRING_EQUAL(jstr(o, "type"), "com.shop.order.created");
    CU_ASSERT_STRING_EQUAL(jstr(o, "dataschema"), "https://shop.example/schemas/order.json");
    CU_ASSERT_STRING_EQUAL(jstr(o, "partitionkey"), "pk-1");
    CU_ASSERT_STRING_EQUAL(jstr(o, "msmsourceid"), source_id);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_object_get(o, "data"), "order")), 1);
    json_decref(o);
}

static void test_round_trip(void)
{
    if (!installed) {
        CU_FAIL("not attempted: the SDK is not installed");
        return;
    }
    char script[320];
    proc_init(&receiver, "receiver.log");
    receiver.port = msm_test_free_port();
    snprintf(script, sizeof(script), "%s/receiver.js", work_dir);
    msm_test_proc_arg(&receiver, "node");
    msm_test_proc_arg(&receiver, "%s", script);
    msm_test_proc_arg(&receiver, "%d", receiver.port);
    CU_ASSERT_EQUAL_FATAL(msm_test_proc_start(&receiver), 0);
    if (msm_test_proc_wait_ready(&receiver, "/", READY_TIMEOUT_MS) != 0)
        print_file("receiver.js", receiver.log);
    CU_ASSERT_FATAL(receiver.pid > 0);

    char body[512];
    CU_ASSERT_EQUAL_FATAL(api("PUT", "/v1/topics/" TOPIC, "{}"), 200);
    snprintf(body, sizeof(body),
             "{\"topic\":\"" TOPIC "\",\"endpoints\":[{\"url\":\"http://127.0.0.1:%d/binary\"}]}",
             receiver.port);
    CU_ASSERT_EQUAL_FATAL(api("PUT", "/v1/subscriptions/shop-binary", body), 200);
    snprintf(body, sizeof(body),
             "{\"topic\":\"" TOPIC "\",\"endpoints\":[{\"url\":\"http://127.0.0.1:%d/batch\"}],"
             "\"max_batch_events\":10}",
             receiver.port);
    CU_ASSERT_EQUAL_FATAL(api("PUT", "/v1/subscriptions/shop-batch", body), 200);
    sleep(2); /* every daemon's registry watcher sees the new subscriptions */

    char url[256], log[320];
    snprintf(script, sizeof(script), "%s/producer.js", work_dir);
    snprintf(url, sizeof(url), "%s/v1/topics/" TOPIC "/events", frontend_url);
    const char *argv[] = {"node", script, url, NULL};
    int rc = run(argv, "producer.log", NODE_TIMEOUT_MS);
    snprintf(log, sizeof(log), "%s/producer.log", work_dir);
    print_file("producer.js", log);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    char *text = read_file(log);
    json_t *sent = text ? json_loads(text, JSON_DISABLE_EOF_CHECK, NULL) : NULL;
    free(text);
    const char *source_id = json_string_value(json_object_get(sent, "sourceid"));
    const char *msm_id = json_string_value(json_object_get(json_object_get(sent, "answer"), "id"));
    CU_ASSERT_PTR_NOT_NULL_FATAL(source_id);
    CU_ASSERT_PTR_NOT_NULL_FATAL(msm_id);
    CU_ASSERT_STRING_NOT_EQUAL(source_id, msm_id); /* msm's id is its own */

    check_event("binary", "/binary", msm_id, source_id);
    check_event("batch", "/batch", msm_id, source_id);
    json_decref(sent);
}

static CU_TestInfo cesdk_tests[] = {
    {"npm install the pinned SDK", test_npm_install},
    {"SDK producer -> msm -> SDK receiver, binary and batch", test_round_trip},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"cloudevents_sdk", suite_init, suite_clean, NULL, NULL, cesdk_tests},
    CU_SUITE_INFO_NULL,
};

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: test_cloudevents_sdk FRONTEND SCHEDULER FLOWCONTROL ROUTER "
                        "CLIENT_DIR\n");
        return 2;
    }
    for (int i = 0; i < NDAEMONS; i++)
        bins[i] = argv[1 + i];
    client_dir = argv[5];
    if (!on_path("node") || !on_path("npm")) {
        printf("SKIPPED: e2e.cloudevents_sdk needs Node.js (>= 18) and npm on PATH "
               "(scripts/install-deps.sh installs them)\n");
        return SKIPPED;
    }
    return msm_test_run(suites);
}
