/* SPDX-License-Identifier: MIT */
/* A registry client we did not write: the npm package @kafkajs/confluent-schema-registry
 * (pinned in package.json here) against the real msm-frontend process and a real redis-server.
 * The client is installed into a temporary folder at test time; registry_client.js runs its
 * steps and prints one line each; this driver asserts its exit status.
 *
 *   test_confluent_client FRONTEND CLIENT_DIR */
#include "msm_test.h"
#include "msm_test_proc.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SUBJECT          "msm-confluent-value"
#define NPM_TIMEOUT_MS   (300 * 1000) /* the npm registry is on the internet */
#define NODE_TIMEOUT_MS  (120 * 1000)
#define READY_TIMEOUT_MS 15000
#define LOG_TAIL_LINES   30

static const char *frontend_bin;
static const char *client_dir;

static msm_test_redis_t redis_srv;
static char work_dir[256];
static char frontend_url[64];
static msm_test_proc_t frontend;
static int tools_found;
static int client_installed;

/* ---- small helpers ---- */

/* 1 when an executable @p name is on PATH. */
static int on_path(const char *name)
{
    const char *path = getenv("PATH");
    if (!path)
        return 0;
    char dir[1024];
    while (*path) {
        size_t n = strcspn(path, ":");
        char file[1200];
        snprintf(dir, sizeof(dir), "%.*s", (int)n, path);
        snprintf(file, sizeof(file), "%s/%s", n ? dir : ".", name);
        if (access(file, X_OK) == 0)
            return 1;
        path += n;
        if (*path == ':')
            path++;
    }
    return 0;
}

static void print_file(const char *title, const char *path, int tail_lines)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        printf("  (%s: %s cannot be read)\n", title, path);
        return;
    }
    char ring[LOG_TAIL_LINES][400];
    int n = 0;
    if (tail_lines > LOG_TAIL_LINES)
        tail_lines = LOG_TAIL_LINES;
    while (fgets(ring[n % tail_lines], sizeof(ring[0]), f))
        n++;
    fclose(f);
    printf("  --- %s%s ---\n", title, n > tail_lines ? " (last lines)" : "");
    for (int i = n > tail_lines ? n - tail_lines : 0; i < n; i++)
        printf("  %s%s", ring[i % tail_lines], strchr(ring[i % tail_lines], '\n') ? "" : "\n");
    fflush(stdout);
}

static int copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb");
    FILE *out = in ? fopen(to, "wb") : NULL;
    int rc = in && out ? 0 : -1;
    char buf[8192];
    size_t n;
    while (rc == 0 && (n = fread(buf, 1, sizeof(buf), in)) > 0) {
        if (fwrite(buf, 1, n, out) != n)
            rc = -1;
    }
    if (in && ferror(in))
        rc = -1;
    if (out && fclose(out) != 0)
        rc = -1;
    if (in)
        fclose(in);
    return rc;
}

/* ---- child processes ---- */

/* Never outlive the test, and take npm's own children along when killed. */
static void proc_init(msm_test_proc_t *p, const char *log)
{
    memset(p, 0, sizeof(*p));
    snprintf(p->log, sizeof(p->log), "%s", log);
    p->death_signal = SIGKILL;
    p->own_group = 1;
}

/* Runs a command to its end. @returns its exit status, 128+signal, or -1 when it had to be
 * killed after @p timeout_ms. */
static int run(const char *const argv[], const char *log, int timeout_ms)
{
    msm_test_proc_t p;
    proc_init(&p, log);
    for (int i = 0; argv[i]; i++)
        msm_test_proc_arg(&p, "%s", argv[i]);
    if (msm_test_proc_start(&p) != 0)
        return -1;
    int rc = msm_test_proc_stop(&p, 0, timeout_ms);
    if (rc == -1)
        printf("  %s did not finish within %d s: killed\n", argv[0], timeout_ms / 1000);
    return rc;
}

static int frontend_start(void)
{
    char ns[64], log[320];
    snprintf(log, sizeof(log), "%s/frontend.log", work_dir);
    proc_init(&frontend, log);
    frontend.port = msm_test_free_port();
    snprintf(frontend_url, sizeof(frontend_url), "http://127.0.0.1:%d", frontend.port);
    msm_test_proc_arg(&frontend, "%s", frontend_bin);
    msm_test_proc_arg(&frontend, "--redis.url=%s", redis_srv.url);
    msm_test_proc_arg(&frontend, "--namespace=%s", msm_test_namespace(ns, sizeof(ns)));
    msm_test_proc_arg(&frontend, "--http.port=%d", frontend.port);
    msm_test_proc_arg(&frontend, "--http.bind=127.0.0.1");
    /* As every local run (loopback endpoints are refused unless allowed). */
    msm_test_proc_arg(&frontend, "--router.allow_networks=127.0.0.0/8,::1");
    if (frontend.port <= 0 || msm_test_proc_start(&frontend) != 0)
        return -1;
    return msm_test_proc_wait_ready(&frontend, NULL, READY_TIMEOUT_MS);
}

/* SIGTERM, as an operator would: @returns the exit status (0 expected), -1 if killed. */
static int frontend_stop(void)
{
    if (frontend.pid <= 0)
        return 0;
    return msm_test_proc_stop(&frontend, SIGTERM, MSM_TEST_PROC_GRACE_MS);
}

/* ---- the suite ---- */

static int start_all(void)
{
    signal(SIGPIPE, SIG_IGN);
    const char *tmp = getenv("TMPDIR");
    snprintf(work_dir, sizeof(work_dir), "%s/msm-confluent-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(work_dir)) {
        fprintf(stderr, "cannot create a temporary directory\n");
        work_dir[0] = '\0';
        return -1;
    }
    if (msm_test_redis_start(&redis_srv) != 0) {
        fprintf(stderr, "cannot start redis-server\n");
        return -1;
    }
    if (frontend_start() != 0) {
        fprintf(stderr, "%s did not become ready\n", frontend_bin);
        print_file("frontend log", frontend.log, LOG_TAIL_LINES);
        return -1;
    }
    return 0;
}

/* Whatever suite_init got to; CUnit does not call the cleanup of a suite whose init failed. */
static int release_all(void)
{
    int rc = frontend_stop();
    if (rc != 0) {
        fprintf(stderr, "msm-frontend exited with %d on SIGTERM\n", rc);
        print_file("frontend log", frontend.log, LOG_TAIL_LINES);
    }
    msm_test_redis_destroy(&redis_srv);
    if (work_dir[0]) {
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", work_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", work_dir);
        work_dir[0] = '\0';
    }
    return rc == 0 ? 0 : -1;
}

static int suite_init(void)
{
    if (start_all() == 0)
        return 0;
    release_all();
    return -1;
}

static int suite_clean(void)
{
    return release_all();
}

static void test_node_and_npm_present(void)
{
    int node = on_path("node"), npm = on_path("npm");
    if (!node || !npm)
        printf("\n  %s%s%s not found on PATH: this test needs Node.js (>= 18) and npm; "
               "scripts/install-deps.sh installs them\n",
               node ? "" : "node", !node && !npm ? " and " : "", npm ? "" : "npm");
    CU_ASSERT_TRUE(node);
    CU_ASSERT_TRUE(npm);
    tools_found = node && npm;
}

/* The pinned client from package.json, into the temporary folder (never the source tree). */
static void test_npm_install(void)
{
    if (!tools_found) {
        CU_FAIL("not attempted: node or npm is missing");
        return;
    }
    const char *files[] = {"package.json", "registry_client.js"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char from[600], to[600];
        snprintf(from, sizeof(from), "%s/%s", client_dir, files[i]);
        snprintf(to, sizeof(to), "%s/%s", work_dir, files[i]);
        CU_ASSERT_EQUAL_FATAL(copy_file(from, to), 0);
    }
    char log[320];
    snprintf(log, sizeof(log), "%s/npm.log", work_dir);
    const char *argv[] = {"npm",      "install", "--no-audit", "--no-fund", "--no-update-notifier",
                          "--prefix", work_dir,  NULL};
    int rc = run(argv, log, NPM_TIMEOUT_MS);
    if (rc != 0) {
        printf("\n  npm install failed (exit %d): is the npm registry reachable?\n", rc);
        print_file("npm output", log, LOG_TAIL_LINES);
    }
    CU_ASSERT_EQUAL(rc, 0);
    client_installed = rc == 0;
}

static void test_registry_round_trip(void)
{
    if (!client_installed) {
        CU_FAIL("not attempted: the client is not installed");
        return;
    }
    char script[320], log[320];
    snprintf(script, sizeof(script), "%s/registry_client.js", work_dir);
    snprintf(log, sizeof(log), "%s/node.log", work_dir);
    const char *argv[] = {"node", script, frontend_url, SUBJECT, NULL};
    int rc = run(argv, log, NODE_TIMEOUT_MS);
    printf("\n");
    print_file("registry_client.js", log, LOG_TAIL_LINES);
    if (rc != 0)
        printf("  registry_client.js exited with %d: every FAIL line above is a step the "
               "Confluent client could not do against msm-frontend\n",
               rc);
    CU_ASSERT_EQUAL(rc, 0);
}

static CU_TestInfo confluent_tests[] = {
    {"node and npm are installed", test_node_and_npm_present},
    {"npm install the pinned client", test_npm_install},
    {"register, read back, re-register, latest, encode/decode", test_registry_round_trip},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"confluent_client", suite_init, suite_clean, NULL, NULL, confluent_tests},
    CU_SUITE_INFO_NULL,
};

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: test_confluent_client FRONTEND CLIENT_DIR\n");
        return 2;
    }
    frontend_bin = argv[1];
    client_dir = argv[2];
    return msm_test_run(suites);
}
